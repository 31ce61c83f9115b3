//! Token counts as the LLM sees them: OpenAI's BPE tokenizers (cl100k_base, GraphRAG's default
//! for GPT-4-class models, and o200k_base for GPT-4o-class ones), compiled into the binary.

use tiktoken_rs::CoreBPE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokenizer {
    Cl100k,
    O200k,
}

impl Tokenizer {
    pub const NAMES: [&'static str; 2] = ["cl100k_base", "o200k_base"];

    pub fn parse(name: &str) -> Option<Tokenizer> {
        match name {
            "cl100k_base" => Some(Tokenizer::Cl100k),
            "o200k_base" => Some(Tokenizer::O200k),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tokenizer::Cl100k => "cl100k_base",
            Tokenizer::O200k => "o200k_base",
        }
    }

    fn bpe(self) -> &'static CoreBPE {
        match self {
            Tokenizer::Cl100k => tiktoken_rs::cl100k_base_singleton(),
            Tokenizer::O200k => tiktoken_rs::o200k_base_singleton(),
        }
    }

    /// Tokens of `text` (special-token text counts as ordinary text, as in a prompt).
    pub fn count(self, text: &str) -> usize {
        self.bpe().encode_ordinary(text).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_openais_tokenizers() {
        // Reference counts from OpenAI's tiktoken.
        assert_eq!(Tokenizer::Cl100k.count("hello world"), 2);
        assert_eq!(Tokenizer::Cl100k.count("tiktoken is great!"), 6);
        assert_eq!(Tokenizer::O200k.count("hello world"), 2);
        assert_eq!(Tokenizer::Cl100k.count(""), 0);
    }
}
