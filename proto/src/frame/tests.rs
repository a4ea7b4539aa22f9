//! Round-trip and robustness properties of the frame codec.

use super::*;
use crate::message::{CallError, DeferredError, Reply};
use proptest::prelude::*;

fn limits() -> FrameLimits {
    FrameLimits {
        max_message: 1 << 20,
        max_payload: 1 << 20,
    }
}

fn reencode(kind: FrameKind, id: u64, body: &FrameBody, payload: &[u8]) -> Vec<u8> {
    encode_frame(kind, id, body, payload).expect("encodes")
}

proptest! {
    #[test]
    fn requests_round_trip(request: Request, id: u64, post: bool, payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        let kind = if post { FrameKind::Post } else { FrameKind::Call };
        let body = FrameBody::Request(request);
        let bytes = reencode(kind, id, &body, &payload);
        let (header, decoded, got_payload) = decode_frame(&bytes, &limits()).expect("decodes");
        prop_assert_eq!(header.kind, kind);
        prop_assert_eq!(header.id, id);
        prop_assert_eq!(got_payload, &payload[..]);
        // Compare re-encoded bytes: floats inside messages may be NaN, which is not `==`.
        prop_assert_eq!(reencode(kind, id, &decoded, &payload), bytes);
    }

    #[test]
    fn replies_round_trip(reply: ReplyMessage, id: u64, payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        let body = FrameBody::Reply(reply);
        let bytes = reencode(FrameKind::Reply, id, &body, &payload);
        let (header, decoded, got_payload) = decode_frame(&bytes, &limits()).expect("decodes");
        prop_assert_eq!(header.kind, FrameKind::Reply);
        prop_assert_eq!(got_payload, &payload[..]);
        prop_assert_eq!(reencode(FrameKind::Reply, id, &decoded, &payload), bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_frame(&bytes, &limits());
        let _ = decode_request(&bytes);
        let _ = decode_reply(&bytes);
    }

    #[test]
    fn corrupted_frames_never_panic(request: Request, flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = reencode(FrameKind::Call, 7, &FrameBody::Request(request), b"payload");
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= value;
        }
        let _ = decode_frame(&bytes, &limits());
        let cut = bytes.len() / 2;
        let _ = decode_frame(&bytes[..cut], &limits());
    }

    #[test]
    fn headers_beyond_limits_are_refused_before_allocation(message_len in (1u32 << 20) + 1.., payload_len in (1u64 << 20) + 1..) {
        let header = FrameHeader { kind: FrameKind::Call, message_len, payload_len: 0, id: 1 };
        prop_assert!(matches!(FrameHeader::decode(&header.encode(), &limits()), Err(FrameError::MessageTooLarge { .. })), "message limit");
        let header = FrameHeader { kind: FrameKind::Call, message_len: 1, payload_len, id: 1 };
        prop_assert!(matches!(FrameHeader::decode(&header.encode(), &limits()), Err(FrameError::PayloadTooLarge { .. })), "payload limit");
    }
}

#[test]
fn header_layout_is_fixed() {
    let header = FrameHeader {
        kind: FrameKind::Reply,
        message_len: 0x0102_0304,
        payload_len: 0x0506_0708_090a_0b0c,
        id: 0x1122_3344_5566_7788,
    };
    let bytes = header.encode();
    assert_eq!(&bytes[0..4], &[b'G', b'F', 3, 0]);
    assert_eq!(&bytes[4..8], &[0x04, 0x03, 0x02, 0x01]);
    assert_eq!(bytes[8], 0x0c);
    assert_eq!(bytes[16], 0x88);
}

#[test]
fn bad_headers_name_the_problem() {
    let good = FrameHeader {
        kind: FrameKind::Call,
        message_len: 1,
        payload_len: 0,
        id: 1,
    }
    .encode();
    let mut bad = good;
    bad[0] = b'H';
    let err = FrameHeader::decode(&bad, &limits()).unwrap_err();
    assert!(err.to_string().contains("not a gpufn frame"), "{err}");
    let mut bad = good;
    bad[2] = 9;
    assert!(matches!(
        FrameHeader::decode(&bad, &limits()),
        Err(FrameError::UnknownKind(9))
    ));
    let mut bad = good;
    bad[3] = 1;
    assert!(matches!(
        FrameHeader::decode(&bad, &limits()),
        Err(FrameError::UnknownFlags(1))
    ));
    let bulk_with_message = FrameHeader {
        kind: FrameKind::Bulk,
        message_len: 3,
        payload_len: 0,
        id: 1,
    };
    assert!(matches!(
        FrameHeader::decode(&bulk_with_message.encode(), &limits()),
        Err(FrameError::BulkWithMessage(3))
    ));
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = Vec::new();
    encode_message(&Request::Ping, &mut bytes).unwrap();
    bytes.push(0);
    assert!(matches!(
        decode_request(&bytes),
        Err(FrameError::TrailingBytes(1))
    ));
}

/// Frames written by `FrameWriter` come out of `FrameReader` intact, payload included, and
/// an unread payload is skipped so the next frame still decodes.
#[tokio::test]
async fn reader_and_writer_agree_over_a_stream() {
    let (client, server) = tokio::io::duplex(1 << 16);
    let big = (0..200_000u32).map(|i| i as u8).collect::<Vec<u8>>();
    let big_for_writer = big.clone();
    let writer = tokio::spawn(async move {
        let mut w = FrameWriter::new(client);
        w.write_request(FrameKind::Call, 1, &Request::Ping, &[])
            .await?;
        let copy = Request::MemcpyHtoD {
            dst: 0x7000_0000_0000,
            stream: None,
        };
        w.write_request(
            FrameKind::Post,
            2,
            &copy,
            &[&big_for_writer[..100_000], &big_for_writer[100_000..]],
        )
        .await?;
        w.write_request(FrameKind::Post, 3, &copy, &[b"skipped"])
            .await?;
        let reply = ReplyMessage {
            deferred: vec![DeferredError {
                request: 2,
                error: CallError {
                    code: crate::CuResult::ERROR_ILLEGAL_ADDRESS,
                    message: "out of bounds".into(),
                },
            }],
            result: Ok(Reply::Done),
            printf_bytes: 0,
        };
        w.write_reply(4, &reply, &[]).await?;
        w.flush().await?;
        Ok::<_, FrameError>(())
    });
    let mut r = FrameReader::new(server, FrameLimits::default());
    let h = r.next_frame().await.unwrap().unwrap();
    assert_eq!((h.kind, h.id), (FrameKind::Call, 1));
    assert_eq!(r.request().unwrap(), Request::Ping);

    let h = r.next_frame().await.unwrap().unwrap();
    assert_eq!((h.kind, h.id, h.payload_len), (FrameKind::Post, 2, 200_000));
    let mut dst = vec![0u8; 200_000];
    r.read_payload(&mut dst[..50]).await.unwrap();
    r.read_payload(&mut dst[50..]).await.unwrap();
    assert_eq!(dst, big);

    let h = r.next_frame().await.unwrap().unwrap();
    assert_eq!(h.id, 3);
    // Leave the payload unread: the reader must skip it.
    let h = r.next_frame().await.unwrap().unwrap();
    assert_eq!((h.kind, h.id), (FrameKind::Reply, 4));
    let reply = r.reply().unwrap();
    assert_eq!(
        reply.deferred[0].error.code,
        crate::CuResult::ERROR_ILLEGAL_ADDRESS
    );
    writer.await.unwrap().unwrap();
    assert!(
        r.next_frame().await.unwrap().is_none(),
        "clean end of stream"
    );
}

#[tokio::test]
async fn a_frame_cut_short_reports_closed() {
    let bytes = encode_frame(
        FrameKind::Call,
        1,
        &FrameBody::Request(Request::Ping),
        b"abc",
    )
    .unwrap();
    let cut = &bytes[..bytes.len() - 2];
    let mut r = FrameReader::new(cut, FrameLimits::default());
    r.next_frame().await.unwrap().unwrap();
    let mut dst = [0u8; 3];
    assert!(matches!(
        r.read_payload(&mut dst).await,
        Err(FrameError::Closed)
    ));
}

#[tokio::test]
async fn frame_buffered_says_when_the_next_frame_needs_no_wait() {
    let mut bytes = Vec::new();
    let mut starts = Vec::new();
    for id in 1..=3 {
        starts.push(bytes.len());
        let frame = encode_frame(
            FrameKind::Post,
            id,
            &FrameBody::Request(Request::Ping),
            match id {
                2 => &[7u8; 2][..],
                3 => &[7u8; 20 << 10][..],
                _ => b"",
            },
        )
        .unwrap();
        bytes.extend_from_slice(&frame);
    }
    let mut r = FrameReader::new(&bytes[..], FrameLimits::default());
    assert!(!r.frame_buffered(), "nothing read from the stream yet");
    r.next_frame().await.unwrap().unwrap();
    assert!(
        r.frame_buffered(),
        "the second frame came whole with the first read"
    );
    let h = r.next_frame().await.unwrap().unwrap();
    assert_eq!(h.payload_len, 2);
    assert!(!r.frame_buffered(), "the payload comes first");
    r.skip_payload().await.unwrap();
    assert!(
        !r.frame_buffered(),
        "the third frame's payload is larger than the buffer"
    );

    // A corrupt header is "ready": next_frame reports it without waiting.
    let mut garbage = bytes.clone();
    garbage[starts[1]] = 0;
    let mut r = FrameReader::new(&garbage[..], FrameLimits::default());
    r.next_frame().await.unwrap().unwrap();
    assert!(r.frame_buffered());
    assert!(r.next_frame().await.is_err());
}
