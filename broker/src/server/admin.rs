//! Metadata, FindCoordinator and the admin API: CreateTopics, DeleteTopics,
//! CreatePartitions, DescribeConfigs.

use kafka_protocol::messages::create_partitions_request::CreatePartitionsRequest;
use kafka_protocol::messages::create_partitions_response::{CreatePartitionsResponse, CreatePartitionsTopicResult};
use kafka_protocol::messages::create_topics_request::CreateTopicsRequest;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::delete_topics_response::{DeletableTopicResult, DeleteTopicsResponse};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Shared;
use crate::topic_config::TopicConfig;
use crate::topics::{Topic, TopicError};

/// The one node's id.
pub const NODE_ID: i32 = 0;
/// What Metadata and DescribeCluster call the cluster.
pub const CLUSTER_ID: &str = "weir-embedded";
/// DescribeConfigs' resource type for topics.
const TOPIC_RESOURCE: i8 = 2;
/// DescribeConfigs' config sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

fn str(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The Kafka error code and message for a refused topic operation.
pub fn topic_error(e: &TopicError) -> (i16, Option<StrBytes>) {
    let code = match e {
        TopicError::Exists(_) => ResponseError::TopicAlreadyExists,
        TopicError::Unknown(_) => ResponseError::UnknownTopicOrPartition,
        TopicError::InvalidName { .. } => ResponseError::InvalidTopicException,
        TopicError::InvalidPartitions { .. } => ResponseError::InvalidPartitions,
        TopicError::Config(_) => ResponseError::InvalidConfig,
        TopicError::Log { .. } | TopicError::Io { .. } => ResponseError::KafkaStorageError,
    };
    (code.code(), Some(str(e.to_string())))
}

fn topic_metadata(topic: &Topic) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(BrokerId(NODE_ID))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                .with_isr_nodes(vec![BrokerId(NODE_ID)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(false)
        .with_partitions(partitions)
}

pub fn metadata(shared: &Shared, request: MetadataRequest, version: i16) -> MetadataResponse {
    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(NODE_ID))
        .with_host(str(shared.advertised.ip().to_string()))
        .with_port(shared.advertised.port() as i32);
    // v0: an empty list means every topic; v1+: null means every topic.
    let wanted = match request.topics {
        Some(t) if !(t.is_empty() && version == 0) => Some(t),
        _ => None,
    };
    let topics = match wanted {
        None => shared.topics.all().iter().map(|t| topic_metadata(t)).collect(),
        Some(wanted) => wanted
            .into_iter()
            .map(|w| {
                let found = match &w.name {
                    Some(name) => shared.topics.get(name.0.as_str()),
                    None => shared.topics.by_id(w.topic_id),
                };
                let auto = version < 4 || request.allow_auto_topic_creation;
                let found = match (found, &w.name) {
                    (Some(t), _) => Ok(t),
                    (None, Some(name)) if auto && shared.settings.auto_create_topics => shared.topics.create(
                        name.0.as_str(),
                        shared.settings.default_partitions,
                        TopicConfig::default(),
                        false,
                    ),
                    (None, Some(name)) => Err(TopicError::Unknown(name.0.to_string())),
                    (None, None) => Err(TopicError::Unknown(w.topic_id.to_string())),
                };
                match found {
                    Ok(t) => topic_metadata(&t),
                    Err(e) => {
                        let code = match e {
                            TopicError::Unknown(_) if w.name.is_none() => ResponseError::UnknownTopicId.code(),
                            e => topic_error(&e).0,
                        };
                        MetadataResponseTopic::default()
                            .with_name(w.name)
                            .with_topic_id(w.topic_id)
                            .with_error_code(code)
                    }
                }
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(str(CLUSTER_ID)))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics)
}

/// Every group and transaction is coordinated by the one node.
pub fn find_coordinator(shared: &Shared, request: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let host = str(shared.advertised.ip().to_string());
    let port = shared.advertised.port() as i32;
    let response = FindCoordinatorResponse::default();
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(NODE_ID))
                    .with_host(host.clone())
                    .with_port(port)
            })
            .collect();
        return response.with_coordinators(coordinators);
    }
    response.with_node_id(BrokerId(NODE_ID)).with_host(host).with_port(port)
}

pub fn create_topics(shared: &Shared, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let result = CreatableTopicResult::default().with_name(t.name.clone());
            let refused = |code: ResponseError, message: String| {
                result
                    .clone()
                    .with_error_code(code.code())
                    .with_error_message(Some(str(message)))
            };
            if !matches!(t.replication_factor, -1 | 1) {
                return refused(
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "replication factor {} for `{name}`: the embedded broker is a single node, use 1 or -1",
                        t.replication_factor
                    ),
                );
            }
            if !t.assignments.is_empty() {
                return refused(
                    ResponseError::InvalidRequest,
                    format!("replica assignments for `{name}`: the embedded broker is a single node"),
                );
            }
            let config = match TopicConfig::from_entries(
                t.configs
                    .iter()
                    .map(|c| (c.name.as_str(), c.value.as_ref().map(|v| v.as_str()))),
            ) {
                Ok(c) => c,
                Err(e) => return refused(ResponseError::InvalidConfig, format!("topic `{name}`: {}", e.0)),
            };
            let partitions = if t.num_partitions == -1 {
                shared.settings.default_partitions
            } else {
                t.num_partitions
            };
            match shared.topics.create(&name, partitions, config, request.validate_only) {
                Ok(topic) => {
                    let configs = topic
                        .config
                        .describe()
                        .into_iter()
                        .map(|(k, v, default)| {
                            CreatableTopicConfigs::default()
                                .with_name(str(k))
                                .with_value(Some(str(v)))
                                .with_config_source(if default { SOURCE_DEFAULT } else { SOURCE_TOPIC })
                        })
                        .collect();
                    result
                        .with_topic_id(topic.id)
                        .with_num_partitions(partitions)
                        .with_replication_factor(1)
                        .with_configs(Some(configs))
                }
                Err(e) => {
                    let (code, message) = topic_error(&e);
                    result.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

pub async fn delete_topics(shared: &Shared, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    // v0-5 name topics in `topic_names`, v6 in `topics` (by name or id).
    let mut wanted: Vec<(Option<String>, uuid::Uuid)> = request
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
        .collect();
    wanted.extend(
        request
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let name = name.or_else(|| shared.topics.by_id(id).map(|t| t.name.clone()));
        let result = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(str(n))))
            .with_topic_id(id);
        let Some(name) = name else {
            responses.push(result.with_error_code(ResponseError::UnknownTopicId.code()));
            continue;
        };
        match shared.topics.delete(&name) {
            Ok(topic) => {
                shared.groups.remove_topic(&name).await;
                responses.push(result.with_topic_id(topic.id));
            }
            Err(e) => {
                let (code, message) = topic_error(&e);
                responses.push(result.with_error_code(code).with_error_message(message));
            }
        }
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub fn create_partitions(shared: &Shared, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let results = request
        .topics
        .into_iter()
        .map(|t| {
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            if t.assignments.is_some() {
                return result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str(format!(
                        "replica assignments for `{}`: the embedded broker is a single node",
                        t.name.0
                    ))));
            }
            match shared
                .topics
                .add_partitions(t.name.0.as_str(), t.count, request.validate_only)
            {
                Ok(()) => result,
                Err(e) => {
                    let (code, message) = topic_error(&e);
                    result.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

pub fn describe_configs(shared: &Shared, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|r| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            if r.resource_type != TOPIC_RESOURCE {
                // Broker resources: nothing configurable to show.
                return result;
            }
            let Some(topic) = shared.topics.get(r.resource_name.as_str()) else {
                return result
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    .with_error_message(Some(str(format!(
                        "topic `{}` does not exist",
                        r.resource_name.as_str()
                    ))));
            };
            let keys = r
                .configuration_keys
                .map(|k| k.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            let configs = topic
                .config
                .describe()
                .into_iter()
                .filter(|(k, _, _)| keys.as_ref().is_none_or(|keys| keys.contains(k)))
                .map(|(k, v, default)| {
                    DescribeConfigsResourceResult::default()
                        .with_name(str(k))
                        .with_value(Some(str(v)))
                        .with_config_source(if default { SOURCE_DEFAULT } else { SOURCE_TOPIC })
                })
                .collect();
            result.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
