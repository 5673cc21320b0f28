//! An upload driven message by message through the raw archive API, so a test can act between
//! messages (kill a target, cut the stream).

use bitmountain_proto::archive::v1 as pb;
use bitmountain_proto::archive::v1::archive_service_client::ArchiveServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// An upload driven by hand.
#[derive(Debug)]
pub struct SlowUpload {
    tx: mpsc::Sender<pb::PutBundleRequest>,
    call: tokio::task::JoinHandle<Result<pb::PutBundleResponse, tonic::Status>>,
}

impl SlowUpload {
    pub async fn start(addr: &str) -> Self {
        let mut stub = ArchiveServiceClient::new(crate::pki::client_channel(addr));
        let (tx, rx) = mpsc::channel(4);
        let call = tokio::spawn(async move {
            stub.put_bundle(ReceiverStream::new(rx))
                .await
                .map(|r| r.into_inner())
        });
        let upload = SlowUpload { tx, call };
        upload
            .send(pb::put_bundle_request::Item::Start(
                pb::BundleStart::default(),
            ))
            .await;
        upload
    }

    pub async fn send(&self, item: pb::put_bundle_request::Item) -> bool {
        self.tx
            .send(pb::PutBundleRequest { item: Some(item) })
            .await
            .is_ok()
    }

    /// Sends one file of `len` bytes in 64 KiB pieces.
    pub async fn file(&self, path: &str, bytes: &[u8]) -> bool {
        if !self
            .send(pb::put_bundle_request::Item::File(pb::FileStart {
                path: path.into(),
                content_type: String::new(),
                size_bytes: bytes.len() as u64,
                sha256: Vec::new(),
            }))
            .await
        {
            return false;
        }
        for piece in bytes.chunks(64 << 10) {
            if !self
                .send(pb::put_bundle_request::Item::Data(piece.to_vec().into()))
                .await
            {
                return false;
            }
        }
        true
    }

    pub async fn end(self) -> Result<pb::PutBundleResponse, tonic::Status> {
        self.send(pb::put_bundle_request::Item::End(pb::BundleEnd {}))
            .await;
        drop(self.tx);
        self.call.await.unwrap()
    }

    /// Cuts the stream without its `end` message; returns what the node answered.
    pub async fn cut(self) -> Result<pb::PutBundleResponse, tonic::Status> {
        drop(self.tx);
        self.call.await.unwrap()
    }
}
