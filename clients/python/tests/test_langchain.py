"""The LangChain retriever on the Dulce data: documents of every kind with metadata, sync and
async, the single-context option, a client-side embedding, and an LCEL chain with a fake LLM."""

from __future__ import annotations

import asyncio
import uuid
from typing import Dict, List

import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.language_models.fake import FakeListLLM  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import PromptTemplate  # noqa: E402
from langchain_core.runnables import RunnableLambda, RunnablePassthrough  # noqa: E402

import torua  # noqa: E402
from torua.langchain import ToruaRetriever  # noqa: E402


def question(dulce) -> Dict:
    """The best connected Dulce entity and a question naming it."""
    top = max(dulce["entities"], key=lambda e: e["degree"])
    return {"entity": top, "question": f"Who is {top['title'].title()}?"}


def test_documents_of_every_kind(client: torua.Client, dulce) -> None:
    q = question(dulce)
    retriever = ToruaRetriever(client=client, top_k=5, max_tokens=8000)
    docs = retriever.invoke(q["question"])
    kinds = [d.metadata["kind"] for d in docs]
    assert {"entity", "relation", "text_unit", "community_report"} <= set(kinds), kinds
    entities = [d for d in docs if d.metadata["kind"] == "entity"]
    assert entities[0].metadata["title"] == q["entity"]["title"]
    assert entities[0].id == q["entity"]["id"] and entities[0].metadata["hop"] == 0
    assert entities[0].page_content.startswith(q["entity"]["title"])
    relation = next(d for d in docs if d.metadata["kind"] == "relation")
    assert " -> " in relation.page_content and relation.metadata["weight"] is not None
    unit = next(d for d in docs if d.metadata["kind"] == "text_unit")
    assert unit.metadata["document_id"] == dulce["batch"].documents[0].id
    assert all(isinstance(d, Document) and d.page_content for d in docs)


def test_async_and_context_only(
    urls: List[str], connect: Dict, client: torua.Client, dulce
) -> None:
    q = question(dulce)

    async def main() -> List[Document]:
        async with torua.AsyncClient(urls, **connect) as ac:
            r = ToruaRetriever(async_client=ac, top_k=5, include=["entities"])
            return await r.ainvoke(q["question"])

    docs = asyncio.run(main())
    assert docs[0].metadata["title"] == q["entity"]["title"]
    assert {d.metadata["kind"] for d in docs} == {"entity"}
    # Without an async client the sync one runs in a thread.
    docs = asyncio.run(ToruaRetriever(client=client, top_k=5).ainvoke(q["question"]))
    assert q["entity"]["title"] in [d.metadata.get("title") for d in docs]

    context = ToruaRetriever(client=client, context_only=True, max_tokens=3000).invoke(
        q["question"]
    )
    assert len(context) == 1 and "-----Entities-----" in context[0].page_content
    assert q["entity"]["title"] in context[0].page_content
    assert context[0].metadata["tokens"] <= 3000
    assert q["entity"]["id"] in context[0].metadata["entity_ids"]


def test_lcel_chain_with_a_fake_llm(client: torua.Client, dulce) -> None:
    q = question(dulce)
    retriever = ToruaRetriever(client=client, top_k=5, max_tokens=4000)
    prompts: List[str] = []

    def format_docs(docs: List[Document]) -> str:
        return "\n\n".join(d.page_content for d in docs)

    def spy(prompt):  # what the LLM is shown
        prompts.append(prompt.to_string())
        return prompt

    prompt = PromptTemplate.from_template(
        "Answer from the context only.\n\nContext:\n{context}\n\nQuestion: {question}\nAnswer:"
    )
    llm = FakeListLLM(responses=[f"{q['entity']['title']} leads the mission."])
    chain = (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | prompt
        | RunnableLambda(spy)
        | llm
        | StrOutputParser()
    )
    answer = chain.invoke(q["question"])
    assert answer == f"{q['entity']['title']} leads the mission."
    assert len(prompts) == 1 and q["question"] in prompts[0]
    assert q["entity"]["title"] in prompts[0].split("Question:")[0]
    assert q["entity"]["description"][:40] in prompts[0]


def test_client_side_embedding(client: torua.Client, embedding_dim: int) -> None:
    if embedding_dim <= 0:
        pytest.skip("the cluster stores no embeddings (TORUA_EMBEDDING_DIM=0)")
    tag = uuid.uuid4().hex[:8]
    vectors = {}
    entities = []
    for i in range(4):
        v = [0.0] * embedding_dim
        v[i % embedding_dim] = 1.0
        v[(i + 1) % embedding_dim] = 0.5
        eid = f"vec-{tag}-{i}"
        vectors[f"topic {i}"] = v
        entities.append({"id": eid, "title": f"VECTOR {tag} {i}", "embedding": v})
    client.ingest({"entities": entities})
    asked: List[str] = []

    def embed(text: str) -> List[float]:
        asked.append(text)
        return vectors[text]

    retriever = ToruaRetriever(
        client=client, embed=embed, send_text=False, top_k=2, hops=0, include=["entities"]
    )
    docs = retriever.invoke("topic 2")
    assert asked == ["topic 2"]
    assert docs[0].id == f"vec-{tag}-2", [d.id for d in docs]
