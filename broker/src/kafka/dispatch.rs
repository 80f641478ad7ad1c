//! One request frame in, its response frame out (or none, for acks=0 produces).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, decode_request_header_from_buffer,
};

use super::coordinator::Groups;
use super::{api, versions};
use crate::config::BrokerConfig;
use crate::error::LogError;
use crate::log::Log;
use crate::producers::Producers;

/// Where the coordinator keeps its durable state: `{data_dir}/coordinator`.
const COORDINATOR_DIR: &str = "coordinator";

/// What every request handler may use.
pub(crate) struct Context {
    pub log: Arc<Log>,
    pub config: BrokerConfig,
    /// Where clients are told this broker is.
    pub advertised: (String, u16),
    /// Consumer groups and their committed offsets.
    pub groups: Arc<Groups>,
    /// Producer ids and idempotent producers' sequence numbers.
    pub producers: Arc<Producers>,
}

impl Context {
    /// Opens the coordinator's durable state (committed offsets, producer ids) beside the log.
    pub fn open(
        log: Arc<Log>,
        config: BrokerConfig,
        advertised: (String, u16),
    ) -> Result<Context, LogError> {
        let dir = log.data_dir().join(COORDINATOR_DIR);
        let groups = Arc::new(Groups::open(&dir, &config)?);
        let producers = Arc::new(Producers::open(&dir, &config)?);
        Ok(Context {
            log,
            config,
            advertised,
            groups,
            producers,
        })
    }

    /// Runs blocking log work (file I/O, fsync) off the async threads.
    pub async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Log) -> T + Send + 'static,
    ) -> T {
        let log = self.log.clone();
        unblock(move || work(&log)).await
    }
}

/// Runs blocking work (file I/O, fsync) off the async threads.
pub(crate) async fn unblock<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("blocking broker work does not panic")
}

/// Who sent a request, as group members are described to Kafka tools.
pub(crate) struct Client {
    pub id: String,
    /// `/ip`, the way Kafka shows a client host.
    pub host: String,
}

/// A request the connection cannot answer; it is logged and the connection closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProtocolError {
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("{0:?} is not implemented by this broker")]
    UnsupportedApi(ApiKey),
    #[error("{key:?} version {version} is not supported (supported: {min}..={max})")]
    UnsupportedVersion {
        key: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// Answers one request frame from `peer`.
pub(crate) async fn handle(
    ctx: &Context,
    peer: SocketAddr,
    frame: Bytes,
) -> Result<Option<Bytes>, ProtocolError> {
    if frame.len() < 8 {
        return Err(ProtocolError::Malformed(format!(
            "a request header needs at least 8 bytes, got {}",
            frame.len()
        )));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(key).map_err(|_| ProtocolError::UnknownApiKey(key))?;
    let (min, max) = versions::supported(api).ok_or(ProtocolError::UnsupportedApi(api))?;
    if api == ApiKey::ApiVersions && version > max {
        // The client learns our versions from a v0 body with UNSUPPORTED_VERSION and retries.
        return encode(
            correlation_id,
            0,
            &versions::api_versions(ResponseError::UnsupportedVersion.code()),
        )
        .map(Some);
    }
    if !(min..=max).contains(&version) {
        return Err(ProtocolError::UnsupportedVersion {
            key: api,
            version,
            min,
            max,
        });
    }
    let mut buf = frame;
    let header = decode_request_header_from_buffer(&mut buf).map_err(malformed)?;
    let client = Client {
        id: header
            .client_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        host: format!("/{}", peer.ip()),
    };
    let buf = &mut buf;
    let v = version;
    let response = match api {
        ApiKey::ApiVersions => encode(correlation_id, v, &versions::api_versions(0))?,
        ApiKey::Metadata => encode(
            correlation_id,
            v,
            &api::metadata::handle(ctx, decode(buf, v)?, v).await,
        )?,
        ApiKey::Produce => match api::produce::handle(ctx, decode(buf, v)?, v).await {
            Some(response) => encode(correlation_id, v, &response)?,
            None => return Ok(None),
        },
        ApiKey::Fetch => encode(
            correlation_id,
            v,
            &api::fetch::handle(ctx, decode(buf, v)?).await,
        )?,
        ApiKey::ListOffsets => encode(
            correlation_id,
            v,
            &api::list_offsets::handle(ctx, decode(buf, v)?).await,
        )?,
        ApiKey::CreateTopics => encode(
            correlation_id,
            v,
            &api::topics::create(ctx, decode(buf, v)?).await,
        )?,
        ApiKey::DeleteTopics => encode(
            correlation_id,
            v,
            &api::topics::delete(ctx, decode(buf, v)?).await,
        )?,
        ApiKey::FindCoordinator => encode(
            correlation_id,
            v,
            &api::find_coordinator::handle(ctx, decode(buf, v)?, v),
        )?,
        ApiKey::JoinGroup => encode(
            correlation_id,
            v,
            &api::membership::join(ctx, &client, decode(buf, v)?, v).await,
        )?,
        ApiKey::SyncGroup => encode(
            correlation_id,
            v,
            &api::membership::sync(ctx, decode(buf, v)?).await,
        )?,
        ApiKey::Heartbeat => encode(
            correlation_id,
            v,
            &api::membership::heartbeat(ctx, decode(buf, v)?),
        )?,
        ApiKey::LeaveGroup => encode(
            correlation_id,
            v,
            &api::membership::leave(ctx, decode(buf, v)?, v),
        )?,
        ApiKey::OffsetCommit => encode(
            correlation_id,
            v,
            &api::offsets::commit(ctx, decode(buf, v)?).await,
        )?,
        ApiKey::OffsetFetch => encode(
            correlation_id,
            v,
            &api::offsets::fetch(ctx, decode(buf, v)?, v).await,
        )?,
        ApiKey::DescribeGroups => encode(
            correlation_id,
            v,
            &api::group_info::describe(ctx, decode(buf, v)?).await,
        )?,
        ApiKey::ListGroups => encode(
            correlation_id,
            v,
            &api::group_info::list(ctx, decode(buf, v)?).await,
        )?,
        ApiKey::InitProducerId => encode(
            correlation_id,
            v,
            &api::init_producer_id::handle(ctx, decode(buf, v)?).await,
        )?,
        other => return Err(ProtocolError::UnsupportedApi(other)),
    };
    Ok(Some(response))
}

fn decode<R: Decodable>(buf: &mut Bytes, version: i16) -> Result<R, ProtocolError> {
    R::decode(buf, version).map_err(malformed)
}

fn malformed(e: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::Malformed(e.to_string())
}

/// A length-prefixed response frame: header then body, each in the version's encoding.
fn encode<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<Bytes, ProtocolError> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, R::header_version(version))
        .map_err(malformed)?;
    body.encode(&mut buf, version).map_err(malformed)?;
    let length = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&length.to_be_bytes());
    Ok(buf.freeze())
}

/// The protocol error code for a log error.
pub(crate) fn error_code(e: &LogError) -> i16 {
    let error = match e {
        LogError::UnknownTopic(_) | LogError::UnknownPartition { .. } => {
            ResponseError::UnknownTopicOrPartition
        }
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::CorruptBatch(_) => ResponseError::CorruptMessage,
        LogError::InvalidTopicName(_) => ResponseError::InvalidTopicException,
        LogError::TopicExists { .. } => ResponseError::TopicAlreadyExists,
        LogError::InvalidPartitionCount { .. } | LogError::PartitionCountMismatch { .. } => {
            ResponseError::InvalidPartitions
        }
        LogError::Closed | LogError::Io { .. } | LogError::Metadata { .. } => {
            ResponseError::KafkaStorageError
        }
        // Errors of the client of an external cluster; the log this broker serves never has them.
        LogError::KafkaUnreachable { .. } | LogError::Kafka { .. } | LogError::KafkaConfig(_) => {
            ResponseError::UnknownServerError
        }
    };
    error.code()
}
