//! Where device messages come from: the seam between an MQTT side ([`crate::mqtt`]'s embedded
//! rumqttd or [`crate::bridge`]'s client of an external broker) and the forwarder
//! ([`crate::forward`]), which validates and appends whatever a source yields the same way.

use std::time::Instant;

use bytes::Bytes;

use crate::error::GatewayError;

/// One device message as the MQTT side delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MqttMessage {
    pub topic: String,
    pub payload: Bytes,
}

/// What a source yielded in one read.
pub(crate) struct Batch<R> {
    pub messages: Vec<MqttMessage>,
    /// Messages the source lost before they were read (only rumqttd's buffer can overwrite).
    pub overwritten: u64,
    /// What the source needs back to acknowledge (or give up on) exactly these messages.
    pub receipt: R,
}

/// A supplier of device messages to the forwarder.
pub(crate) trait Source: Send + 'static {
    type Receipt: Send;

    /// Up to `max` messages, waiting until `deadline` for the first one; empty when none came.
    fn next_batch(
        &mut self,
        max: usize,
        deadline: Instant,
    ) -> Result<Batch<Self::Receipt>, GatewayError>;

    /// Every message of the batch behind `receipt` is durably in the log.
    fn stored(&mut self, receipt: Self::Receipt);

    /// The batch behind `receipt` could not be appended: have it delivered again if possible.
    fn not_stored(&mut self, receipt: Self::Receipt);

    /// Shutdown has begun: take no new messages; [`Source::next_batch`] yields only what is
    /// already held, then empty batches.
    fn stop_intake(&mut self);

    /// The forwarder is done: settle what is owed (acknowledgements) and let go of the MQTT side.
    fn finish(self);
}
