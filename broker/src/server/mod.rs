//! The network side: accept connections, read size-prefixed requests,
//! decode them with `kafka-protocol`, answer each in order.
//!
//! Requests of one connection are handled one at a time, in order, as
//! Kafka's own broker does (a connection is muted while its request is in
//! flight): clients rely on responses coming back in request order.

mod admin;
mod data;
pub(crate) mod txn;
mod versions;

pub use admin::CLUSTER_ID;
pub(crate) use data::now_ms;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

use crate::group::GroupCoordinator;
use crate::producers::ProducerIds;
use crate::topics::Topics;
use crate::txn::TxnCoordinator;
use crate::BrokerSettings;

/// Kafka's `socket.request.max.bytes`: a larger request closes the connection.
const MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

/// What every connection shares.
pub(crate) struct Shared {
    pub topics: Topics,
    pub groups: GroupCoordinator,
    pub producers: ProducerIds,
    pub txns: TxnCoordinator,
    pub settings: BrokerSettings,
    /// The address clients are told to connect to (Metadata, FindCoordinator).
    pub advertised: SocketAddr,
}

/// Accept connections until the task is dropped.
pub(crate) async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, peer, shared).await {
                        tracing::debug!(%peer, "connection closed: {e}");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let mut read = BufReader::with_capacity(64 * 1024, read);
    let mut write = BufWriter::with_capacity(64 * 1024, write);
    let host = peer.ip().to_string();
    loop {
        let size = match read.read_i32().await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        if size < 0 || size as usize > MAX_REQUEST_BYTES {
            return Err(invalid(format!(
                "request of {size} bytes (at most {MAX_REQUEST_BYTES})"
            )));
        }
        let mut frame = BytesMut::zeroed(size as usize);
        read.read_exact(&mut frame).await?;
        let Some(response) = handle(frame.freeze(), &host, &shared).await? else {
            continue; // acks=0 produce: no response
        };
        write.write_all(&response).await?;
        write.flush().await?;
    }
}

/// Decode one request, answer it, encode the answer with its size prefix.
/// `Ok(None)`: the request wants no answer. `Err`: close the connection (a
/// request that cannot be decoded, an API or version not supported).
async fn handle(mut frame: Bytes, host: &str, shared: &Shared) -> std::io::Result<Option<Bytes>> {
    if frame.len() < 8 {
        return Err(invalid(format!("request of {} bytes has no header", frame.len())));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(key).map_err(|_| invalid(format!("unknown API key {key}")))?;
    if api == ApiKey::ApiVersions && !versions::supports(api, version) {
        // KIP-511: a client newer than the broker learns the versions from
        // a v0 answer with UNSUPPORTED_VERSION, then retries.
        let body = versions::api_versions_unsupported();
        return encode(correlation_id, api, 0, ResponseKind::ApiVersions(body)).map(Some);
    }
    if !versions::supports(api, version) {
        return Err(invalid(format!("{api:?} v{version} is not supported")));
    }
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|e| invalid(format!("{api:?} v{version} header: {e}")))?;
    let client_id = header
        .client_id
        .as_ref()
        .map(|s| s.as_str().to_string())
        .unwrap_or_default();
    let request = RequestKind::decode(api, &mut frame, version)
        .map_err(|e| invalid(format!("{api:?} v{version} from `{client_id}`: {e}")))?;
    let response = match request {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(versions::api_versions()),
        RequestKind::Metadata(r) => ResponseKind::Metadata(admin::metadata(shared, r, version)),
        RequestKind::Produce(r) => {
            let acks = r.acks;
            let response = data::produce(shared, r, version);
            if acks == 0 {
                return Ok(None);
            }
            ResponseKind::Produce(response)
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(data::fetch(shared, r, version).await),
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(data::list_offsets(shared, r, version)),
        RequestKind::FindCoordinator(r) => ResponseKind::FindCoordinator(admin::find_coordinator(shared, r, version)),
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(admin::create_topics(shared, r)),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(admin::delete_topics(shared, r).await),
        RequestKind::CreatePartitions(r) => ResponseKind::CreatePartitions(admin::create_partitions(shared, r)),
        RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(admin::describe_configs(shared, r)),
        RequestKind::InitProducerId(r) if r.transactional_id.is_some() => {
            ResponseKind::InitProducerId(txn::init_producer_id(shared, r, version).await)
        }
        RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(data::init_producer_id(shared, r)),
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(txn::add_partitions_to_txn(shared, r, version))
        }
        RequestKind::AddOffsetsToTxn(r) => ResponseKind::AddOffsetsToTxn(txn::add_offsets_to_txn(shared, r, version)),
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(txn::txn_offset_commit(shared, r, version).await)
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(txn::end_txn(shared, r, version).await),
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(txn::describe_transactions(shared, r))
        }
        RequestKind::ListTransactions(r) => ResponseKind::ListTransactions(txn::list_transactions(shared, r, version)),
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(shared.groups.join_group(r, version, &client_id, host).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(shared.groups.sync_group(r, version).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(shared.groups.heartbeat(r, version).await),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(shared.groups.leave_group(r, version).await),
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(shared.groups.offset_commit(r, version).await),
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(shared.groups.offset_fetch(r, version).await),
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(shared.groups.list_groups(r, version).await),
        RequestKind::DescribeGroups(r) => ResponseKind::DescribeGroups(shared.groups.describe_groups(r, version).await),
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(shared.groups.delete_groups(r, version).await),
        _ => return Err(invalid(format!("{api:?} is not supported"))),
    };
    encode(correlation_id, api, version, response).map(Some)
}

fn encode(correlation_id: i32, api: ApiKey, version: i16, response: ResponseKind) -> std::io::Result<Bytes> {
    // Sized for the records a Fetch carries, so that a response of many
    // MiB is not built by doubling (and copying) a small buffer.
    let records: usize = match &response {
        ResponseKind::Fetch(f) => f
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
            .sum(),
        _ => 0,
    };
    let mut out = BytesMut::with_capacity(records + 1024);
    out.put_i32(0); // size, filled in below
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, api.response_header_version(version))
        .map_err(|e| invalid(format!("encoding the {api:?} v{version} response header: {e}")))?;
    response
        .encode(&mut out, version)
        .map_err(|e| invalid(format!("encoding the {api:?} v{version} response: {e}")))?;
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out.freeze())
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}
