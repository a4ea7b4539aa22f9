//! A small client of the worker built on `gpufn-proto` (not the stub), and a worker running
//! inside the test process.

#![allow(dead_code)]

use gpufn_proto::frame::{FrameKind, FrameReader, FrameWriter};
use gpufn_proto::message::{
    CallError, Channel, Credentials, DeferredError, Hello, ImageHash, ModuleId, PROTOCOL_VERSION,
    Reply, Request, Role, Welcome,
};
use gpufn_proto::transport::{Address, ClientOptions, Connection, RecvStream, SendStream, connect};
use gpufn_proto::{CuResult, FrameLimits};
use gpufn_worker::cache::hash_image;
use gpufn_worker::{BackendChoice, Worker, WorkerConfig};
use std::time::Duration;

/// A worker serving on a fresh address inside this test process.
pub struct TestWorker {
    pub worker: Worker,
    pub address: Address,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn config(session_memory: u64) -> WorkerConfig {
    WorkerConfig {
        backend: BackendChoice::Cpu,
        session_memory,
        launch_threads: 2,
        ..WorkerConfig::default()
    }
}

/// Starts a CPU worker listening on `scheme` (`unix`, `tcp` or `quic`).
pub async fn start_worker(scheme: &str, config: WorkerConfig) -> TestWorker {
    let dir = tempfile::tempdir().unwrap();
    let address: Address = match scheme {
        "unix" => format!("unix://{}/worker.sock", dir.path().display()),
        "tcp" => "tcp://127.0.0.1:0".to_string(),
        "quic" => "quic://127.0.0.1:0".to_string(),
        other => panic!("unknown scheme {other}"),
    }
    .parse()
    .unwrap();
    let worker = Worker::new(config).unwrap();
    let listener = worker.bind(&address, Some(dir.path())).await.unwrap();
    let address = listener.local_address().clone();
    let serving = worker.clone();
    let task = tokio::spawn(async move { serving.serve(listener).await });
    TestWorker {
        worker,
        address,
        task,
        _dir: dir,
    }
}

/// What a call returned.
#[derive(Debug)]
pub struct Response {
    pub deferred: Vec<DeferredError>,
    pub result: Result<Reply, CallError>,
    pub data: Vec<u8>,
    pub printf: Vec<u8>,
}

impl Response {
    pub fn ok(self) -> Reply {
        match self.result {
            Ok(reply) => reply,
            Err(e) => panic!("call failed: {e:?}"),
        }
    }

    pub fn err(self) -> CallError {
        match self.result {
            Ok(reply) => panic!("call succeeded with {reply:?}, expected an error"),
            Err(e) => e,
        }
    }
}

/// One session: a connection with its `Calls` stream.
pub struct Client {
    writer: FrameWriter<SendStream>,
    reader: FrameReader<RecvStream>,
    next_id: u64,
    _connection: Connection,
    pub welcome: Welcome,
}

pub fn hello() -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        role: Role::Stub,
        channel: Channel::Calls,
        credentials: Credentials::None,
        session: None,
        client: "worker integration test".to_string(),
    }
}

/// Opens a stream and sends its first call; returns the raw answer.
pub async fn open(address: &Address, hello: Hello) -> (Result<Client, CallError>, ()) {
    let connection = connect(address, &ClientOptions::default()).await.unwrap();
    let (send, recv) = connection.open_stream().await.unwrap();
    let mut writer = FrameWriter::new(send);
    let mut reader = FrameReader::new(recv, FrameLimits::default());
    writer
        .write_request(FrameKind::Call, 1, &Request::Hello(hello), &[])
        .await
        .unwrap();
    writer.flush().await.unwrap();
    reader
        .next_frame()
        .await
        .unwrap()
        .expect("a reply to Hello");
    let reply = reader.reply().unwrap();
    let result = match reply.result {
        Ok(Reply::Welcome(welcome)) => Ok(Client {
            writer,
            reader,
            next_id: 2,
            _connection: connection,
            welcome,
        }),
        Ok(other) => panic!("Hello answered with {other:?}"),
        Err(e) => Err(e),
    };
    (result, ())
}

impl Client {
    pub async fn connect(address: &Address) -> Client {
        open(address, hello()).await.0.expect("handshake")
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends a post; returns its request id.
    pub async fn post(&mut self, request: Request, payload: &[u8]) -> u64 {
        let id = self.take_id();
        self.writer
            .write_request(FrameKind::Post, id, &request, &[payload])
            .await
            .unwrap();
        self.writer.flush().await.unwrap();
        id
    }

    pub async fn call(&mut self, request: Request, payload: &[u8]) -> Response {
        let id = self.take_id();
        self.writer
            .write_request(FrameKind::Call, id, &request, &[payload])
            .await
            .unwrap();
        self.writer.flush().await.unwrap();
        let header = self
            .reader
            .next_frame()
            .await
            .unwrap()
            .expect("the worker closed the stream instead of replying");
        assert_eq!(header.id, id, "replies come in order");
        let message = self.reader.reply().unwrap();
        let printf_len = message.printf_bytes as usize;
        let mut all = self.reader.read_payload_vec().await.unwrap();
        let printf = all.split_off(all.len() - printf_len);
        Response {
            deferred: message.deferred,
            result: message.result,
            data: all,
            printf,
        }
    }

    /// Whether the worker has closed this stream (reads until end of stream).
    pub async fn is_closed_by_worker(&mut self) -> bool {
        matches!(self.reader.next_frame().await, Ok(None) | Err(_))
    }

    pub async fn alloc(&mut self, size: u64) -> u64 {
        match self
            .call(
                Request::MemAlloc {
                    address: None,
                    size,
                },
                &[],
            )
            .await
            .ok()
        {
            Reply::Address(a) => a,
            other => panic!("MemAlloc answered {other:?}"),
        }
    }

    pub async fn write(&mut self, dst: u64, data: &[u8]) {
        let r = self
            .call(Request::MemcpyHtoD { dst, stream: None }, data)
            .await;
        assert!(r.deferred.is_empty(), "{:?}", r.deferred);
        r.ok();
    }

    pub async fn read(&mut self, src: u64, len: u64) -> Response {
        self.call(
            Request::MemcpyDtoH {
                src,
                len,
                stream: None,
            },
            &[],
        )
        .await
    }

    pub async fn load_ptx(&mut self, module: u64, ptx: &str) -> Reply {
        let image = nul_terminated(ptx);
        self.call(
            Request::ModuleLoad {
                module: ModuleId(module),
                hash: hash_image(&image),
                inline: true,
            },
            &image,
        )
        .await
        .ok()
    }
}

pub fn nul_terminated(ptx: &str) -> Vec<u8> {
    let mut image = ptx.as_bytes().to_vec();
    image.push(0);
    image
}

pub fn image_hash(ptx: &str) -> ImageHash {
    hash_image(&nul_terminated(ptx))
}

pub fn f32s(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn to_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Waits (polling) until `check` holds; fails the test after a generous bound so a bug
/// shows as a failure rather than a hang.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen");
}

pub fn code(e: &CallError) -> CuResult {
    e.code
}

/// `c[i] = a[i] + b[i]` for `i < n`.
pub const VECTOR_ADD_PTX: &str = r#"
.version 8.0
.target sm_80
.address_size 64

.visible .entry vadd(
    .param .u64 a,
    .param .u64 b,
    .param .u64 c,
    .param .u32 n
)
{
    .reg .pred %p<2>;
    .reg .b32 %r<6>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<12>;

    ld.param.u64 %rd1, [a];
    ld.param.u64 %rd2, [b];
    ld.param.u64 %rd3, [c];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.s32 %r5, %r2, %r3, %r4;
    setp.ge.u32 %p1, %r5, %r1;
    @%p1 bra DONE;
    cvta.to.global.u64 %rd4, %rd1;
    cvta.to.global.u64 %rd5, %rd2;
    cvta.to.global.u64 %rd6, %rd3;
    mul.wide.u32 %rd7, %r5, 4;
    add.s64 %rd8, %rd4, %rd7;
    add.s64 %rd9, %rd5, %rd7;
    add.s64 %rd10, %rd6, %rd7;
    ld.global.f32 %f1, [%rd8];
    ld.global.f32 %f2, [%rd9];
    add.f32 %f3, %f1, %f2;
    st.global.f32 [%rd10], %f3;
DONE:
    ret;
}
"#;

/// Stores `value` at `ptr + offset` (an out-of-bounds store when `offset` is past the end).
pub const STORE_PTX: &str = r#"
.version 8.0
.target sm_80
.address_size 64

.visible .entry store_at(
    .param .u64 ptr,
    .param .u64 offset,
    .param .u32 value
)
{
    .reg .b32 %r<2>;
    .reg .b64 %rd<4>;

    ld.param.u64 %rd1, [ptr];
    ld.param.u64 %rd2, [offset];
    ld.param.u32 %r1, [value];
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r1;
    ret;
}
"#;

/// Prints "hello from thread N" per thread, and has a module variable `counter`.
pub const PRINTF_PTX: &str = r#"
.version 8.0
.target sm_80
.address_size 64

.extern .func (.param .b32 func_retval0) vprintf
(
    .param .b64 vprintf_param_0,
    .param .b64 vprintf_param_1
)
;
.global .align 4 .u32 counter = 7;
.global .align 1 .b8 $str[22] = {104, 101, 108, 108, 111, 32, 102, 114, 111, 109, 32, 116, 104, 114, 101, 97, 100, 32, 37, 100, 10, 0};

.visible .entry hello()
{
    .local .align 8 .b8 __local_depot0[8];
    .reg .b64 %SP;
    .reg .b64 %SPL;
    .reg .b32 %r<3>;
    .reg .b64 %rd<5>;

    mov.u64 %SPL, __local_depot0;
    cvta.local.u64 %SP, %SPL;
    mov.u32 %r1, %tid.x;
    add.u64 %rd1, %SP, 0;
    add.u64 %rd2, %SPL, 0;
    st.local.u32 [%rd2], %r1;
    mov.u64 %rd3, $str;
    cvta.global.u64 %rd4, %rd3;
    {
    .param .b64 param0;
    st.param.b64 [param0], %rd4;
    .param .b64 param1;
    st.param.b64 [param1], %rd1;
    .param .b32 retval0;
    call.uni (retval0), vprintf, (param0, param1);
    ld.param.b32 %r2, [retval0];
    }
    ret;
}
"#;

/// A session whose client wrote raw bytes; only reading is left.
pub struct RawClient {
    reader: FrameReader<RecvStream>,
    _send: SendStream,
    _connection: Connection,
}

impl RawClient {
    /// Whether the worker closed the stream (reads until end of stream or error).
    pub async fn is_closed_by_worker(&mut self) -> bool {
        loop {
            match self.reader.next_frame().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return true,
            }
        }
    }
}

impl Client {
    /// Writes raw bytes on the calls stream (for malformed-frame tests).
    pub async fn send_raw(self, bytes: &[u8]) -> RawClient {
        use tokio::io::AsyncWriteExt;
        let mut send = self.writer.into_inner();
        let _ = send.write_all(bytes).await;
        let _ = send.flush().await;
        RawClient {
            reader: self.reader,
            _send: send,
            _connection: self._connection,
        }
    }
}
