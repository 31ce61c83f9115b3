//! Reset-on-drop for send streams. quinn FINISHES a dropped `SendStream`, so a writer that is
//! cancelled mid-message (its future dropped) would deliver a truncated message that looks
//! complete. The guard resets the stream instead unless `finish` was called.

use std::ops::{Deref, DerefMut};

/// Application error code for streams abandoned by a cancelled or failed local task.
pub const CODE_CANCELLED: u32 = 1;
/// Application error code for a stream stopped because the message was over the limit.
pub const CODE_TOO_LARGE: u32 = 2;
/// Application error code for a stream stopped because it broke the protocol.
pub const CODE_PROTOCOL: u32 = 3;

pub(crate) struct SendGuard {
    stream: quinn::SendStream,
    armed: bool,
}

impl SendGuard {
    pub(crate) fn new(stream: quinn::SendStream) -> Self {
        SendGuard {
            stream,
            armed: true,
        }
    }

    /// Ends the stream cleanly; from now on dropping the guard does not reset it.
    pub(crate) fn finish(&mut self) -> Result<(), quinn::ClosedStream> {
        self.armed = false;
        self.stream.finish()
    }
}

impl Deref for SendGuard {
    type Target = quinn::SendStream;
    fn deref(&self) -> &Self::Target {
        &self.stream
    }
}

impl DerefMut for SendGuard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.stream
    }
}

impl Drop for SendGuard {
    fn drop(&mut self) {
        if self.armed {
            // Errors mean the stream is already closed, which is what we want.
            let _ = self.stream.reset(CODE_CANCELLED.into());
        }
    }
}
