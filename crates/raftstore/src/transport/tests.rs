#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::engine::{Engine, CF_SM};
use crate::snapshot::{self, Side};
use bitmountain_proto::v1::{RaftEnvelope, SnapshotChunk};
use protobuf::Message as _;
use raft::prelude::MessageType;

#[derive(Default)]
struct Collect(Mutex<Vec<Message>>);

impl Inbox for Collect {
    fn deliver(&self, m: Message) -> bool {
        self.0.lock().unwrap().push(m);
        true
    }
    fn report(&self, _: Report) {}
}

/// A receiving member (id 2) on an ephemeral port; returns its address and inbox.
async fn receiver(snap_dir: PathBuf) -> (String, Arc<Collect>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let t = Transport::new(
        2,
        addr.clone(),
        Members::new(),
        false,
        bitmountain_proto::Credentials::insecure(),
        tokio::runtime::Handle::current(),
        snap_dir,
    );
    let inbox = Arc::new(Collect::default());
    t.set_inbox(inbox.clone());
    let svc = RaftService { transport: t }.into_server();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, inbox)
}

fn chunks(header: RaftEnvelope, file: &[u8]) -> Vec<SnapshotChunk> {
    let mut out = Vec::new();
    let mut header = Some(header);
    for piece in file.chunks(SNAPSHOT_CHUNK_BYTES / 8) {
        out.push(SnapshotChunk {
            header: header.take(),
            data: bytes::Bytes::copy_from_slice(piece),
        });
    }
    out
}

#[tokio::test]
async fn envelopes_keep_order_within_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let t = Transport::new(
        1,
        "127.0.0.1:1".into(),
        Members::new(),
        false,
        bitmountain_proto::Credentials::insecure(),
        tokio::runtime::Handle::current(),
        dir.path().to_path_buf(),
    );
    let append = |index: u64, data_bytes: usize| {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.to = 2;
        m.index = index;
        let mut e = raft::prelude::Entry::default();
        e.set_data(vec![7u8; data_bytes].into());
        m.set_entries(vec![e].into());
        m
    };
    let indexes = |envs: &[RaftEnvelope]| -> Vec<Vec<u64>> {
        envs.iter()
            .map(|env| {
                env.messages
                    .iter()
                    .map(|b| Message::parse_from_bytes(b).unwrap().index)
                    .collect()
            })
            .collect()
    };

    // By count: 2,500 small messages make envelopes of 1,024, 1,024 and 452, in order.
    let small: Vec<Message> = (0..2_500).map(|i| append(i, 10)).collect();
    let envs = t.envelopes(2, &small);
    let got = indexes(&envs);
    assert_eq!(
        got.iter().map(Vec::len).collect::<Vec<_>>(),
        [MAX_MESSAGES_PER_ENVELOPE, MAX_MESSAGES_PER_ENVELOPE, 452]
    );
    assert_eq!(got.concat(), (0..2_500).collect::<Vec<u64>>());
    assert!(envs.iter().all(|e| e.to_id == 2 && e.from_id == 1));

    // By size: 6 MiB messages go two to an envelope; one larger than the limit travels
    // alone rather than not at all.
    let big: Vec<Message> = vec![
        append(1, 6 << 20),
        append(2, 6 << 20),
        append(3, 6 << 20),
        append(4, MAX_ENVELOPE_BYTES + 1),
        append(5, 10),
    ];
    assert_eq!(
        indexes(&t.envelopes(2, &big)),
        [vec![1, 2], vec![3], vec![4], vec![5]]
    );
    assert!(t.envelopes(2, &[]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_streams_are_checked_before_raft_sees_them() {
    // A snapshot of a few thousand records, as the leader (member 1) builds it.
    let src = tempfile::tempdir().unwrap();
    let engine = Engine::open(src.path()).unwrap();
    let mut members = Members::new();
    members.insert(1, "127.0.0.1:1".into());
    engine.bootstrap(&members).unwrap();
    let mut b = rocksdb::WriteBatch::default();
    for i in 0u32..5_000 {
        b.put_cf(engine.cf(CF_SM).unwrap(), i.to_be_bytes(), vec![7u8; 100]);
    }
    engine.write(b, true).unwrap();
    let snap = snapshot::generate(engine.db(), engine.snap_dir()).unwrap();
    let meta = snap.get_metadata().clone();
    let file = std::fs::read(snapshot::file_path(
        engine.snap_dir(),
        Side::Generated,
        meta.index,
        meta.term,
    ))
    .unwrap();
    assert!(
        file.len() > SNAPSHOT_CHUNK_BYTES / 8 * 3,
        "want several pieces"
    );
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.from = 1;
    m.to = 2;
    m.set_snapshot(snap);
    let header = RaftEnvelope {
        from_id: 1,
        from_address: "127.0.0.1:1".into(),
        to_id: 2,
        messages: vec![m.write_to_bytes().unwrap()],
    };

    let dst = tempfile::tempdir().unwrap();
    let (addr, inbox) = receiver(dst.path().to_path_buf()).await;
    let mut c = RaftTransportClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let received = snapshot::file_path(dst.path(), Side::Received, meta.index, meta.term);
    let leftovers = || std::fs::read_dir(dst.path()).unwrap().count();

    // Cut short: refused, nothing kept, Raft never hears of it.
    let mut short = chunks(header.clone(), &file);
    short.pop();
    let err = c
        .stream_snapshot(tokio_stream::iter(short))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("ended after"), "{err}");
    // One flipped byte: refused as data loss.
    let mut flipped = file.clone();
    flipped[file.len() / 2] ^= 1;
    let err = c
        .stream_snapshot(tokio_stream::iter(chunks(header.clone(), &flipped)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err}");
    // More bytes than the descriptor names.
    let mut long = file.clone();
    long.extend_from_slice(&[0; 10]);
    let err = c
        .stream_snapshot(tokio_stream::iter(chunks(header.clone(), &long)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    // A MsgSnapshot smuggled into a plain envelope stream is refused.
    let err = c
        .stream(tokio_stream::iter(vec![header.clone()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(inbox.0.lock().unwrap().is_empty());
    assert_eq!(leftovers(), 0);

    // Whole: the file is published under its final name, then Raft gets the message.
    c.stream_snapshot(tokio_stream::iter(chunks(header, &file)))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&received).unwrap(), file);
    let got = inbox.0.lock().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].get_msg_type(), MessageType::MsgSnapshot);
    assert_eq!(got[0].get_snapshot().get_metadata().index, meta.index);
}
