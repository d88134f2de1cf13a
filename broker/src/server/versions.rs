//! Which APIs and versions the broker answers, for ApiVersions and for
//! refusing what it does not support.

use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;

/// The APIs served, each at every version `kafka-protocol` can decode
/// (`ApiKey::valid_versions`), so old and new clients both negotiate one.
const SERVED: &[ApiKey] = &[
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::SyncGroup,
    ApiKey::DescribeGroups,
    ApiKey::ListGroups,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::InitProducerId,
    ApiKey::DescribeConfigs,
    ApiKey::CreatePartitions,
    ApiKey::DeleteGroups,
    ApiKey::AddPartitionsToTxn,
    ApiKey::AddOffsetsToTxn,
    ApiKey::EndTxn,
    ApiKey::TxnOffsetCommit,
    ApiKey::DescribeTransactions,
    ApiKey::ListTransactions,
];

pub fn supports(api: ApiKey, version: i16) -> bool {
    let range = api.valid_versions();
    SERVED.contains(&api) && range.min <= version && version <= range.max
}

fn api_keys() -> Vec<ApiVersion> {
    SERVED
        .iter()
        .map(|api| {
            let range = api.valid_versions();
            ApiVersion::default()
                .with_api_key(*api as i16)
                .with_min_version(range.min)
                .with_max_version(range.max)
        })
        .collect()
}

pub fn api_versions() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

pub fn api_versions_unsupported() -> ApiVersionsResponse {
    api_versions().with_error_code(ResponseError::UnsupportedVersion.code())
}
