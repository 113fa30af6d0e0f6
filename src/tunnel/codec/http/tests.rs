//! The HTTP frames' bounds: each one refused one step past it, accepted
//! at it, and every truncated body refused.
use super::*;
use crate::tunnel::decode_frames;
use crate::tunnel::encode_frame;

fn request() -> HttpRequest {
    HttpRequest {
        req_id: 9,
        actor_id: 7,
        method: "GET".into(),
        path: "/history".into(),
        query: "since=3".into(),
        headers: vec![("host".into(), Bytes::from_static(b"example.com"))],
        peer: "127.0.0.1:5000".into(),
        body: false,
    }
}

fn response() -> HttpResponse {
    HttpResponse {
        req_id: 9,
        status: 200,
        headers: vec![("content-type".into(), Bytes::from_static(b"text/plain"))],
        body: true,
    }
}

/// Encodes `frame` without checking it (the encoder trusts its caller)
/// and decodes it as a peer would.
fn decoded(frame: Frame) -> Result<Frame, TunnelError> {
    let mut out = BytesMut::new();
    encode_frame(&mut out, &frame);
    decode_frames(out.freeze()).next().expect("one frame")
}

fn refusal(frame: Frame) -> &'static str {
    match decoded(frame) {
        Err(e) => e.0,
        Ok(f) => panic!("accepted {f:?}"),
    }
}

fn with_request(f: impl FnOnce(&mut HttpRequest)) -> Frame {
    let mut req = request();
    f(&mut req);
    Frame::HttpRequest(req)
}

fn with_headers(headers: Vec<(String, Bytes)>) -> Frame {
    Frame::HttpResponse(HttpResponse {
        headers,
        ..response()
    })
}

/// A frame of type `t` with `body` as it is, for what the encoder cannot say.
fn raw(t: u8, body: &[u8]) -> Result<Frame, TunnelError> {
    let mut out = BytesMut::new();
    out.put_u8(t);
    put_bytes(&mut out, body);
    decode_frames(out.freeze()).next().expect("one frame")
}

#[test]
fn methods_are_tokens_of_1_to_16_bytes() {
    for m in ["GET", "PROPFIND", "M-SEARCH", &"X".repeat(16)] {
        assert!(
            decoded(with_request(|r| r.method = m.into())).is_ok(),
            "{m}"
        );
    }
    for m in ["", "GET ", "G\u{e9}T", "GET\r\n", "(GET)", &"X".repeat(17)] {
        let err = refusal(with_request(|r| r.method = m.into()));
        assert_eq!(err, "HTTP method is not a token of 1-16 bytes", "{m:?}");
    }
}

#[test]
fn paths_start_with_a_slash_and_hold_no_controls_space_or_query() {
    let long = format!("/{}", "p".repeat(limits::HTTP_TARGET - 1));
    assert!(decoded(with_request(|r| r.path = long.clone())).is_ok());
    let err = refusal(with_request(|r| r.path = format!("{long}p")));
    assert_eq!(err, "HTTP path too long");
    for p in ["", "history", "/a b", "/a?b", "/a\r\nx: y", "/\u{7f}"] {
        let err = refusal(with_request(|r| r.path = p.into()));
        assert_eq!(err, "HTTP path is not an absolute path", "{p:?}");
    }
}

#[test]
fn queries_may_be_empty_and_are_bounded() {
    assert!(decoded(with_request(|r| r.query.clear())).is_ok());
    let long = "q".repeat(limits::HTTP_TARGET);
    assert!(decoded(with_request(|r| r.query = long.clone())).is_ok());
    let err = refusal(with_request(|r| r.query = format!("{long}q")));
    assert_eq!(err, "HTTP query too long");
    let err = refusal(with_request(|r| r.query = "a=1 HTTP/1.1".into()));
    assert_eq!(err, "HTTP query holds a control character");
}

#[test]
fn header_counts_are_bounded() {
    let one = || ("x".to_string(), Bytes::from_static(b"1"));
    let at = vec![one(); limits::HEADERS as usize];
    assert!(decoded(with_headers(at.clone())).is_ok());
    let over = vec![one(); limits::HEADERS as usize + 1];
    assert_eq!(
        refusal(with_headers(over)),
        "list longer than the protocol allows"
    );
    // A count the bytes left cannot hold is refused before allocating.
    let mut body = BytesMut::new();
    put_varint(&mut body, 9);
    put_varint(&mut body, 200);
    put_varint(&mut body, 100);
    let err = raw(tag::HTTP_RESPONSE, &body).unwrap_err();
    assert_eq!(err.0, "list count exceeds the frame");
}

#[test]
fn header_bytes_are_bounded_in_total() {
    // Two headers whose names and values fill the limit exactly.
    let half = limits::HTTP_HEADER_BYTES / 2;
    let value = |n: usize| Bytes::from(vec![b'v'; n - 1]);
    let at = vec![("a".into(), value(half)), ("b".into(), value(half))];
    assert!(decoded(with_headers(at)).is_ok());
    let over = vec![("a".into(), value(half)), ("b".into(), value(half + 1))];
    assert_eq!(
        refusal(with_headers(over)),
        "HTTP headers over the size limit"
    );
}

#[test]
fn header_names_are_lower_case_tokens_and_values_cannot_split_a_response() {
    for name in ["", "Content-Type", "x y", "x:y", "x\u{e9}"] {
        let err = refusal(with_headers(vec![(name.into(), Bytes::new())]));
        assert_eq!(
            err, "HTTP header name is not a lower-case token",
            "{name:?}"
        );
    }
    for value in [&b"a\r\nset-cookie: x"[..], b"a\nb", b"a\0"] {
        let headers = vec![("x".into(), Bytes::copy_from_slice(value))];
        let err = refusal(with_headers(headers));
        assert_eq!(err, "HTTP header value holds CR, LF or NUL");
    }
    // obs-text and empty values are values.
    let headers = vec![
        ("x".into(), Bytes::from_static(b"\xe9\t ")),
        ("y".into(), Bytes::new()),
    ];
    assert!(decoded(with_headers(headers)).is_ok());
}

#[test]
fn statuses_are_100_to_599_but_not_101() {
    let status = |s: u64| {
        let mut body = BytesMut::new();
        put_varint(&mut body, 9);
        put_varint(&mut body, s);
        put_varint(&mut body, 0);
        body.put_u8(0);
        raw(tag::HTTP_RESPONSE, &body)
    };
    for s in [100, 102, 200, 599] {
        assert!(status(s).is_ok(), "{s}");
    }
    for s in [0, 99, 101, 600, 1 << 16, u64::MAX] {
        assert_eq!(status(s).unwrap_err().0, "HTTP status out of range", "{s}");
    }
}

#[test]
fn body_flags_are_0_or_1() {
    let mut out = BytesMut::new();
    encode_frame(&mut out, &Frame::HttpResponse(response()));
    let last = out.len() - 1;
    out[last] = 2;
    let err = decode_frames(out.freeze()).next().unwrap().unwrap_err();
    assert_eq!(err.0, "HTTP body flag is neither 0 nor 1");
}

#[test]
fn empty_bodies_zero_credit_and_long_reasons_are_refused() {
    let empty = Frame::HttpBody {
        req_id: 9,
        data: Bytes::new(),
    };
    assert_eq!(refusal(empty), "empty HTTP body frame");
    let zero = Frame::HttpCredit {
        req_id: 9,
        bytes: 0,
    };
    assert_eq!(refusal(zero), "zero HTTP credit");
    let cancel = |n: usize| Frame::HttpCancel {
        req_id: 9,
        reason: "r".repeat(n),
    };
    assert!(decoded(cancel(limits::HTTP_REASON)).is_ok());
    let err = refusal(cancel(limits::HTTP_REASON + 1));
    assert_eq!(err, "HTTP cancel reason too long");
}

#[test]
fn every_truncated_body_is_refused() {
    let frames = [
        Frame::HttpRequest(HttpRequest {
            body: true,
            ..request()
        }),
        Frame::HttpResponse(response()),
        Frame::HttpEnd { req_id: 1 << 30 },
        Frame::HttpCancel {
            req_id: 9,
            reason: "client went away".into(),
        },
        Frame::HttpCredit {
            req_id: 9,
            bytes: 1 << 20,
        },
        // Its data is the rest of the body: only a cut req_id is short.
        Frame::HttpBody {
            req_id: 1 << 30,
            data: Bytes::from_static(b"x"),
        },
    ];
    for frame in frames {
        let mut body = BytesMut::new();
        let t = write_frame_body(&mut body, &frame);
        for cut in 0..body.len() {
            assert!(raw(t, &body[..cut]).is_err(), "{frame:?} cut at {cut}");
        }
        assert_eq!(raw(t, &body), Ok(frame));
    }
}

/// The body and type of `frame`, as `encode_frame` writes them.
fn write_frame_body(out: &mut BytesMut, frame: &Frame) -> u8 {
    let mut whole = BytesMut::new();
    encode_frame(&mut whole, frame);
    let mut r = Reader::new(whole.freeze());
    let t = r.u8().unwrap();
    out.put_slice(&r.bytes().unwrap());
    t
}
