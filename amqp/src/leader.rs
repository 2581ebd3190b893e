//! Where the active controller tells standby controllers its public URL: the durable queue
//! `<ns>.leader`, which keeps one message (the newest; `x-max-length` 1, `x-overflow`
//! `drop-head`), published through the direct exchange of the same name ([`Target::Leader`]).
//! A standby reads it without taking it: `basic.get`, then the message goes back (`basic.nack`
//! with requeue).
//!
//! [`Target::Leader`]: crate::Target::Leader

use super::{AmqpError, Broker};
use lapin::ExchangeKind;
use lapin::options::{BasicGetOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};

impl Broker {
    /// Declares the leader queue (the namespace's queue type, without a delivery limit: a
    /// record is read back often and never dead-lettered) and its exchange; the active
    /// controller does this before each [`Target::Leader`](crate::Target::Leader) publish.
    pub async fn declare_leader(&self) -> Result<(), AmqpError> {
        let name = self.names().leader();
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongUInt(1));
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("drop-head".into()),
        );
        let queues = self.link.queues();
        queues.add_args(&mut args, false);
        let ch = self.channel().await?;
        super::topology::declare_queue(&ch, &name, args, &queues).await?;
        super::topology::exchange(&ch, &name, ExchangeKind::Direct).await?;
        super::topology::bind(&ch, &name, &name).await?;
        let _ = ch.close(200, "leader queue declared".into()).await;
        Ok(())
    }

    /// The message in the leader queue, left there; `None` when the queue is empty or does not
    /// exist (no controller of this release has led the namespace yet).
    pub async fn peek_leader(&self) -> Result<Option<Vec<u8>>, AmqpError> {
        let ch = self.channel().await?;
        let got = ch
            .basic_get(
                self.names().leader().as_str().into(),
                BasicGetOptions::default(),
            )
            .await;
        let got = match got {
            Ok(got) => got,
            // A missing queue closes the channel.
            Err(e) if e.to_string().contains("NOT_FOUND") => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let payload = match got {
            Some(message) => {
                let payload = message.delivery.data.clone();
                message
                    .delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await?;
                Some(payload)
            }
            None => None,
        };
        let _ = ch.close(200, "leader read".into()).await;
        Ok(payload)
    }
}
