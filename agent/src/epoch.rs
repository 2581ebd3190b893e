//! Fencing by controller epoch: with the state journal each controller that takes over a
//! namespace leads with a higher epoch, which its jobs and cancels carry. An agent keeps the
//! highest it has seen and refuses (acks, drops, counts) a job or cancel of a lower one, which a
//! deposed controller sent; the new controller republishes every queued job itself. Epoch 0
//! (a controller without the journal, or an older one) is neither refused nor remembered.

use std::sync::atomic::{AtomicU64, Ordering};

/// The highest epoch seen, and how many messages were refused for carrying a lower one.
#[derive(Debug, Default)]
pub(crate) struct Epochs {
    highest: AtomicU64,
    refused: AtomicU64,
}

impl Epochs {
    /// Whether a message of `epoch` may be acted on (raising the highest seen); otherwise counts
    /// the refusal and returns the highest epoch seen.
    pub fn admit(&self, epoch: u64) -> Result<(), u64> {
        if epoch == 0 {
            return Ok(());
        }
        let before = self.highest.fetch_max(epoch, Ordering::SeqCst);
        if epoch >= before {
            Ok(())
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            Err(before)
        }
    }

    /// Messages refused since the agent started.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_epoch_is_refused_and_counted_and_zero_is_always_admitted() {
        let epochs = Epochs::default();
        assert_eq!(epochs.admit(2), Ok(()));
        assert_eq!(epochs.admit(2), Ok(()));
        assert_eq!(epochs.admit(1), Err(2));
        assert_eq!(epochs.admit(0), Ok(()));
        assert_eq!(epochs.admit(3), Ok(()));
        assert_eq!(epochs.admit(2), Err(3));
        assert_eq!(epochs.refused(), 2);
    }
}
