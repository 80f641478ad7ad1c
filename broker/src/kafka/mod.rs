//! The Kafka wire protocol over TCP, so real Kafka clients (kcat, librdkafka, kafka-python,
//! confluent-kafka) produce to and consume from the log unchanged.
//!
//! Protocol code is sans-I/O: [`frame`] splits the byte stream into length-prefixed requests and
//! [`dispatch`] turns one request into its response bytes, one module per API under [`api`].
//! [`server`] is the thin TCP loop around them: one task per connection, requests answered
//! strictly in order, a bounded number of connections and a bounded frame size.
//!
//! Consumer groups: [`coordinator`] runs the classic rebalance protocol for every group (this
//! node is every group's coordinator) with committed offsets kept durably in
//! `{data_dir}/coordinator/offsets.log`. Idempotent producers get ids from InitProducerId and their
//! batches are deduplicated by sequence number (see `crate::producers`). A JoinGroup or SyncGroup
//! waiting for the rest of its group holds up only its own connection.

mod api;
mod coordinator;
mod dispatch;
mod frame;
mod server;
mod versions;

pub use server::serve;

#[cfg(test)]
mod tests;
