//! How much one Fetch answer carries: a client may allow 4 MiB per
//! partition, but one partition gives at most 1 MiB to one answer (whole
//! batches; a first batch larger than that still goes out whole), so a
//! consumer is fed by many small answers rather than waiting for one huge
//! one. Raw requests through `kafka-protocol`, records produced by rdkafka.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::fetch_response::FetchResponse;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use weir_broker::{Broker, BrokerConfig, BrokerSettings};

const MIB: usize = 1024 * 1024;
const VERSION: i16 = 12;

/// One Fetch of partition 0 of `topic` from `offset`, allowing 4 MiB for the
/// partition and 50 MiB in all: (records bytes, their offsets).
fn fetch(addr: &str, topic: &str, offset: i64) -> (usize, Vec<i64>) {
    let request = FetchRequest::default()
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(50 * MIB as i32)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(4 * MIB as i32)])]);
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Fetch as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("fetch-size-test")))
        .encode(&mut body, ApiKey::Fetch.request_header_version(VERSION))
        .unwrap();
    request.encode(&mut body, VERSION).unwrap();
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);

    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(&frame).unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut answer = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut answer).unwrap();
    let mut answer = Bytes::from(answer);
    let header = ResponseHeader::decode(&mut answer, ApiKey::Fetch.response_header_version(VERSION)).unwrap();
    assert_eq!(header.correlation_id, 7);
    let response = FetchResponse::decode(&mut answer, VERSION).unwrap();
    assert_eq!(answer.remaining(), 0, "the whole answer decodes");
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    let records = partition.records.clone().unwrap_or_default();
    let len = records.len();
    let mut buf = records;
    let offsets = RecordBatchDecoder::decode_all(&mut buf)
        .unwrap()
        .into_iter()
        .flat_map(|set| set.records.into_iter().map(|r| r.offset))
        .collect();
    (len, offsets)
}

#[test]
fn one_partition_gives_at_most_one_mib_to_one_answer_and_the_rest_follows() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerConfig {
        dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        settings: BrokerSettings::default(),
    })
    .unwrap();
    let addr = broker.addr().to_string();

    // 3,000 records of 1 KiB (about 3 MiB) in batches of at most 64 KiB.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("batch.size", "65536")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let value = vec![b'x'; 1024];
    for _ in 0..3000 {
        while let Err((e, _)) = producer.send(BaseRecord::<(), [u8]>::to("big").payload(&value).partition(0)) {
            assert!(
                matches!(
                    e,
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)
                ),
                "send: {e}"
            );
            producer.poll(Duration::from_millis(10));
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let mut offset = 0;
    let mut answers = 0;
    while offset < 3000 {
        let (len, offsets) = fetch(&addr, "big", offset);
        assert!(len > 0, "an answer from offset {offset} carries records");
        assert!(
            len <= MIB,
            "an answer from offset {offset} carries {len} bytes, more than 1 MiB"
        );
        assert_eq!(
            offsets.first(),
            Some(&offset),
            "each answer starts where the last ended"
        );
        assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "offsets are consecutive");
        offset = offsets.last().unwrap() + 1;
        answers += 1;
    }
    assert_eq!(offset, 3000);
    assert!(answers >= 3, "about 3 MiB took {answers} answers");
}
