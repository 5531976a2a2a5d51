//! Rust clients against a real tonic server through the `:authority` layer on a real unix
//! socket: tonic's own client, the `h2` crate as a client, and HTTP/2 frames written by hand for
//! what no library client sends (invalid authorities, padding, priority, tiny CONTINUATION
//! fragments, oversized table updates).

mod authority_support;

use std::path::Path;
use std::time::Duration;

use authority_support::{LIST_AND_WATCH_MESSAGES, Seen, serve};
use bytes::{Buf, Bytes, BytesMut};
use hostdev_api::v1beta1::device_plugin_client::DevicePluginClient;
use hostdev_api::v1beta1::registration_client::RegistrationClient;
use hostdev_api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateRequest, Empty, RegisterRequest,
};
use loona_hpack::{Decoder, Encoder};
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

const WAIT: Duration = Duration::from_secs(10);
const ALLOCATE: &str = "/v1beta1.DevicePlugin/Allocate";
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const DATA: u8 = 0x0;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

fn allocate_request(call: usize) -> AllocateRequest {
    AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: vec![format!("dev-{call}")],
        }],
    }
}

fn grpc_body(msg: &impl prost::Message) -> Vec<u8> {
    let m = msg.encode_to_vec();
    let mut b = vec![0];
    b.extend_from_slice(&(m.len() as u32).to_be_bytes());
    b.extend_from_slice(&m);
    b
}

fn check_allocation(data: &[u8], call: usize) {
    assert!(data.len() >= 5, "no gRPC message in {data:?}");
    let resp = AllocateResponse::decode(&data[5..]).expect("AllocateResponse");
    let c = &resp.container_responses[0];
    assert_eq!(c.envs["DEVICES"], format!("dev-{call}"), "call {call}");
    assert_eq!(c.envs["CALL"], call.to_string(), "call {call}");
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[derive(Debug)]
enum Outcome {
    Done {
        data: Vec<u8>,
        trailers: Vec<(String, String)>,
    },
    Reset(u32),
    GoAway(u32),
    Closed,
}

/// An HTTP/2 client written frame by frame, with a real HPACK encoder (dynamic table on, so the
/// layer has to follow its state) and decoder for the server's answers.
struct RawClient {
    io: UnixStream,
    buf: BytesMut,
    enc: Encoder<'static>,
    dec: Decoder<'static>,
    next_stream: u32,
}

impl RawClient {
    async fn connect(socket: &Path) -> Self {
        let mut io = UnixStream::connect(socket).await.expect("connect");
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        io.write_all(&hello).await.expect("preface");
        Self {
            io,
            buf: BytesMut::new(),
            enc: Encoder::new(),
            dec: Decoder::new(),
            next_stream: 1,
        }
    }

    /// The request's header block; `authority: None` sends none at all.
    fn block(
        &mut self,
        authority: Option<&[u8]>,
        call: usize,
        extra: &[(&[u8], &[u8])],
    ) -> Vec<u8> {
        let call = call.to_string();
        let mut h: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", ALLOCATE.as_bytes()),
        ];
        if let Some(a) = authority {
            h.push((b":authority", a));
        }
        h.extend([
            (&b"content-type"[..], &b"application/grpc"[..]),
            (b"te", b"trailers"),
            (b"x-call", call.as_bytes()),
        ]);
        h.extend_from_slice(extra);
        self.enc.encode(h)
    }

    fn stream(&mut self) -> u32 {
        let s = self.next_stream;
        self.next_stream += 2;
        s
    }

    /// Sends `header_frames` (already framed) and the Allocate body, and reads the answer.
    async fn call(&mut self, stream: u32, header_frames: Vec<u8>, call: usize) -> Outcome {
        let mut bytes = header_frames;
        bytes.extend(frame(
            DATA,
            END_STREAM,
            stream,
            &grpc_body(&allocate_request(call)),
        ));
        self.io.write_all(&bytes).await.expect("request");
        self.response(stream).await
    }

    async fn read_frame(&mut self) -> Option<(u8, u8, u32, Bytes)> {
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let mut f = self.buf.split_to(9 + len);
                    let (kind, flags) = (f[3], f[4]);
                    let stream = u32::from_be_bytes([f[5], f[6], f[7], f[8]]) & 0x7fff_ffff;
                    f.advance(9);
                    return Some((kind, flags, stream, f.freeze()));
                }
            }
            let n = tokio::time::timeout(WAIT, self.io.read_buf(&mut self.buf))
                .await
                .expect("server answered in time")
                .expect("read");
            if n == 0 {
                return None;
            }
        }
    }

    async fn response(&mut self, stream: u32) -> Outcome {
        let mut data = Vec::new();
        let mut header_blocks = 0;
        loop {
            let Some((kind, flags, s, payload)) = self.read_frame().await else {
                return Outcome::Closed;
            };
            match kind {
                SETTINGS if flags & 0x1 == 0 => {
                    // The server may already have closed after an error: the answer still counts.
                    let _ = self.io.write_all(&frame(SETTINGS, 0x1, 0, &[])).await;
                }
                GOAWAY => {
                    return Outcome::GoAway(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                }
                RST_STREAM if s == stream => {
                    return Outcome::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                }
                HEADERS => {
                    assert!(flags & END_HEADERS != 0, "server split its headers");
                    // Every block is decoded, to keep the table in step with the server's.
                    let headers = self.dec.decode(&payload).expect("server headers decode");
                    header_blocks += 1;
                    if s == stream && flags & END_STREAM != 0 {
                        let trailers = headers
                            .into_iter()
                            .map(|(n, v)| {
                                (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap())
                            })
                            .collect();
                        assert_eq!(header_blocks, 2, "a response head and trailers");
                        return Outcome::Done { data, trailers };
                    }
                }
                DATA if s == stream => data.extend_from_slice(&payload),
                _ => {}
            }
        }
    }
}

fn assert_ok(outcome: Outcome, call: usize) {
    match outcome {
        Outcome::Done { data, trailers } => {
            assert!(
                trailers.contains(&("grpc-status".into(), "0".into())),
                "call {call}: trailers {trailers:?}"
            );
            check_allocation(&data, call);
        }
        other => panic!("call {call}: {other:?}"),
    }
}

fn last_seen(seen: &[Seen]) -> &Seen {
    seen.last().expect("a request reached the services")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_client_is_served_and_its_authority_kept() {
    let server = serve(true).await;
    let channel = hostdev_api::unix::connect(&server.socket)
        .await
        .expect("connect");
    RegistrationClient::new(channel.clone())
        .register(RegisterRequest {
            version: hostdev_api::VERSION.into(),
            endpoint: "x.sock".into(),
            resource_name: "example.com/widget".into(),
            options: None,
        })
        .await
        .expect("register");
    let mut plugin = DevicePluginClient::new(channel);
    for call in 0..5 {
        let mut req = tonic::Request::new(allocate_request(call));
        req.metadata_mut()
            .insert("x-call", call.to_string().parse().unwrap());
        let resp = plugin.allocate(req).await.expect("allocate").into_inner();
        check_allocation(&grpc_body(&resp), call);
    }
    let mut stream = plugin
        .list_and_watch(Empty {})
        .await
        .expect("list and watch")
        .into_inner();
    let mut messages = 0;
    while stream.message().await.expect("message").is_some() {
        messages += 1;
    }
    assert_eq!(messages, LIST_AND_WATCH_MESSAGES);
    let authorities = server.record.authorities();
    assert_eq!(authorities.len(), 7);
    assert!(
        authorities
            .iter()
            .all(|a| a.as_deref() == Some("[::]:50051")),
        "{authorities:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_many_requests_with_changing_and_large_metadata_on_one_connection() {
    let server = serve(true).await;
    let io = UnixStream::connect(&server.socket).await.expect("connect");
    let (client, connection) = h2::client::handshake(io).await.expect("handshake");
    tokio::spawn(connection);
    let big = "b".repeat(40_000);
    for call in 0..300usize {
        let mut client = client.clone().ready().await.expect("ready");
        let mut req = http::Request::post(format!("http://widget.example{ALLOCATE}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-call", call.to_string())
            // New values every call: the client's encoder keeps inserting and evicting.
            .header(format!("x-rotating-{}", call % 13), "v".repeat(call % 97));
        if call % 50 == 7 {
            // Over 16 KiB: h2 sends it as HEADERS + CONTINUATION.
            req = req.header("x-big", big.as_str());
        }
        let (resp, mut body) = client
            .send_request(req.body(()).unwrap(), false)
            .expect("send");
        body.send_data(grpc_body(&allocate_request(call)).into(), true)
            .expect("body");
        let resp = tokio::time::timeout(WAIT, resp)
            .await
            .expect("in time")
            .expect("response");
        assert_eq!(resp.status(), 200, "call {call}");
        let mut recv = resp.into_body();
        let mut data = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.expect("data");
            let _ = recv.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = recv
            .trailers()
            .await
            .expect("trailers")
            .expect("some trailers");
        assert_eq!(trailers["grpc-status"], "0", "call {call}");
        check_allocation(&data, call);
        let seen = server.record.seen();
        let last = last_seen(&seen);
        assert_eq!(
            last.authority.as_deref(),
            Some("widget.example"),
            "call {call}"
        );
        assert_eq!(last.big, (call % 50 == 7).then_some(40_000), "call {call}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn padded_and_priority_headers_with_a_raw_path_authority() {
    let server = serve(true).await;
    let mut c = RawClient::connect(&server.socket).await;
    let path = server.socket.display().to_string();
    let block = c.block(Some(path.as_bytes()), 0, &[]);
    let stream = c.stream();
    let mut payload = vec![200u8];
    payload.extend_from_slice(&[0x80, 0, 0, 0, 99]); // exclusive, on stream 0, weight 99
    payload.extend_from_slice(&block);
    payload.extend(std::iter::repeat_n(0u8, 200));
    let frames = frame(HEADERS, END_HEADERS | PADDED | PRIORITY, stream, &payload);
    assert_ok(c.call(stream, frames, 0).await, 0);
    assert_eq!(
        last_seen(&server.record.seen()).authority.as_deref(),
        Some("localhost")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_in_tiny_continuation_frames_with_a_percent_encoded_authority() {
    let server = serve(true).await;
    let mut c = RawClient::connect(&server.socket).await;
    let block = c.block(
        Some(b"tmp%2Fx%2Fkubelet.sock"),
        0,
        &[(b"x-note", &[b'n'; 300])],
    );
    let stream = c.stream();
    let mut frames = Vec::new();
    let chunks: Vec<&[u8]> = block.chunks(7).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let flags = if i + 1 == chunks.len() {
            END_HEADERS
        } else {
            0
        };
        frames.extend(frame(kind, flags, stream, chunk));
    }
    assert!(chunks.len() > 40);
    assert_ok(c.call(stream, frames, 0).await, 0);
    assert_eq!(
        last_seen(&server.record.seen()).authority.as_deref(),
        Some("localhost")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_block_is_cut_again_into_frames_h2_accepts() {
    let server = serve(true).await;
    let mut c = RawClient::connect(&server.socket).await;
    let big = vec![b'q'; 40_000];
    let block = c.block(Some(b"/raw/path.sock"), 0, &[(b"x-big", &big)]);
    let stream = c.stream();
    let mut frames = Vec::new();
    let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let flags = if i + 1 == chunks.len() {
            END_HEADERS
        } else {
            0
        };
        frames.extend(frame(kind, flags, stream, chunk));
    }
    assert_ok(c.call(stream, frames, 0).await, 0);
    let seen = server.record.seen();
    assert_eq!(last_seen(&seen).authority.as_deref(), Some("localhost"));
    assert_eq!(last_seen(&seen).big, Some(40_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_authority_and_an_empty_one() {
    let server = serve(true).await;
    let mut c = RawClient::connect(&server.socket).await;
    for (call, authority) in [None, Some(&b""[..])].into_iter().enumerate() {
        let block = c.block(authority, call, &[]);
        let stream = c.stream();
        assert_ok(
            c.call(stream, frame(HEADERS, END_HEADERS, stream, &block), call)
                .await,
            call,
        );
    }
    assert_eq!(
        server.record.authorities(),
        vec![None, Some("localhost".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_with_indexed_authorities_keep_the_tables_in_step() {
    let server = serve(true).await;
    let mut c = RawClient::connect(&server.socket).await;
    let forms: [(&[u8], &str); 4] = [
        (
            b"var%2Flib%2Fkubelet%2Fdevice-plugins%2Fkubelet.sock",
            "localhost",
        ),
        (b"widget.example:8443", "widget.example:8443"),
        (b"/var/lib/kubelet/device-plugins/kubelet.sock", "localhost"),
        (b"localhost", "localhost"),
    ];
    let mut expected = Vec::new();
    for call in 0..200 {
        let (authority, seen_as) = forms[call % 4];
        let filler = vec![b'f'; call % 211];
        let name = format!("x-evict-{}", call % 17);
        let mut block = Vec::new();
        if call % 37 == 36 {
            // Size updates to 0 and back to 4096: the client empties its table mid-connection.
            block.extend_from_slice(&[0x20, 0x3f, 0xe1, 0x1f]);
            c.enc = Encoder::new();
        }
        block.extend(c.block(Some(authority), call, &[(name.as_bytes(), &filler)]));
        let stream = c.stream();
        assert_ok(
            c.call(stream, frame(HEADERS, END_HEADERS, stream, &block), call)
                .await,
            call,
        );
        expected.push(Some(seen_as.to_owned()));
    }
    assert_eq!(server.record.authorities(), expected);
}

/// A block the layer cannot decode is handed to h2 unchanged, so the client gets h2's own answer.
async fn oversized_table_update(layered: bool) -> (Outcome, Vec<Seen>) {
    let server = serve(layered).await;
    let mut c = RawClient::connect(&server.socket).await;
    // Dynamic table size update to 8192; the server allows 4096 (RFC 7541 6.3, RFC 9113 4.3).
    let mut block = vec![0x3f, 0xe1, 0x3f];
    block.extend(c.block(Some(b"localhost"), 0, &[]));
    let stream = c.stream();
    let outcome = c
        .call(stream, frame(HEADERS, END_HEADERS, stream, &block), 0)
        .await;
    (outcome, server.record.seen())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_size_over_the_servers_limit_gets_h2s_own_connection_error() {
    let (plain, _) = oversized_table_update(false).await;
    let (layered, seen) = oversized_table_update(true).await;
    let Outcome::GoAway(plain_code) = plain else {
        panic!("h2 without the layer answered {plain:?}");
    };
    match layered {
        Outcome::GoAway(code) => assert_eq!(code, plain_code, "same GOAWAY code as plain h2"),
        other => panic!("expected GOAWAY {plain_code}, got {other:?}"),
    }
    assert!(seen.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_layer_a_raw_path_authority_is_reset_with_protocol_error() {
    let server = serve(false).await;
    let mut c = RawClient::connect(&server.socket).await;
    let block = c.block(
        Some(b"/var/lib/kubelet/device-plugins/kubelet.sock"),
        0,
        &[],
    );
    let stream = c.stream();
    match c
        .call(stream, frame(HEADERS, END_HEADERS, stream, &block), 0)
        .await
    {
        Outcome::Reset(code) => assert_eq!(code, 0x1, "PROTOCOL_ERROR"),
        other => panic!("expected RST_STREAM PROTOCOL_ERROR, got {other:?}"),
    }
}
