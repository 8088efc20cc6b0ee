//! A small outgoing HTTP helper over `wasi:http/outgoing-handler` (collector and
//! session-policy worlds).
//!
//! The host sends a request only to endpoints the module's grant names, over
//! HTTPS with certificate verification; anything else comes back as an error
//! (`HttpRequestDenied`).

use crate::bindings::wasi::wasi::http::outgoing_handler;
use crate::bindings::wasi::wasi::http::types::{
    Fields, IncomingBody, Method, OutgoingRequest, Scheme,
};
use crate::bindings::wasi::wasi::io::streams::StreamError;

/// The largest response body [`get`] reads; a larger body is an error.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Bytes asked for per read of the response body.
const READ_CHUNK_BYTES: u64 = 64 * 1024;

/// The parts of an absolute `http(s)://authority/path?query` URL.
#[derive(Debug, PartialEq, Eq)]
struct Url<'a> {
    https: bool,
    authority: &'a str,
    path_with_query: &'a str,
}

fn parse_url(url: &str) -> Result<Url<'_>, String> {
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!(
            "unsupported url {url:?}: expected http:// or https://"
        ));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.is_empty() {
        return Err(format!("url {url:?} has no host"));
    }
    let tail = tail.split('#').next().unwrap_or_default();
    let path_with_query = if tail.is_empty() {
        "/"
    } else if tail.starts_with('?') {
        // "host?q" means "/?q"; keep the query but the host needs a path.
        return Err(format!("url {url:?} has a query but no path"));
    } else {
        tail
    };
    Ok(Url {
        https,
        authority,
        path_with_query,
    })
}

/// `GET url` and return the status code and the whole body (at most
/// [`MAX_BODY_BYTES`]).
///
/// Errors carry the WASI `ErrorCode` debug text, e.g. `HttpRequestDenied` when
/// the endpoint is not in the module's grant.
pub fn get(url: &str) -> Result<(u16, Vec<u8>), String> {
    let url = parse_url(url)?;
    let request = OutgoingRequest::new(Fields::new());
    let scheme = if url.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    request
        .set_method(&Method::Get)
        .map_err(|()| "invalid method".to_string())?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "invalid scheme".to_string())?;
    request
        .set_authority(Some(url.authority))
        .map_err(|()| format!("invalid authority {:?}", url.authority))?;
    request
        .set_path_with_query(Some(url.path_with_query))
        .map_err(|()| format!("invalid path {:?}", url.path_with_query))?;

    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    let response = loop {
        match pending.get() {
            Some(result) => break result,
            None => pending.subscribe().block(),
        }
    };
    let response = response
        .map_err(|()| "response already taken".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();

    let body = response
        .consume()
        .map_err(|()| "response body already taken".to_string())?;
    let mut bytes = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|()| "response body stream already taken".to_string())?;
        loop {
            match stream.blocking_read(READ_CHUNK_BYTES) {
                Ok(chunk) => {
                    if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                        return Err(format!("response body larger than {MAX_BODY_BYTES} bytes"));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
            }
        }
    }
    // Trailers are not used; dropping the future discards them.
    drop(IncomingBody::finish(body));
    Ok((status, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, expect: Result<(bool, &str, &str), ()>) {
        let got = parse_url(url)
            .map(|u| (u.https, u.authority, u.path_with_query))
            .map_err(|_| ());
        assert_eq!(got, expect, "{url}");
    }

    #[test]
    fn urls() {
        check(
            "https://a.example:443/x?y=1",
            Ok((true, "a.example:443", "/x?y=1")),
        );
        check("http://127.0.0.1:8080", Ok((false, "127.0.0.1:8080", "/")));
        check("https://a.example/p#frag", Ok((true, "a.example", "/p")));
        check("ftp://a.example/", Err(()));
        check("https:///path", Err(()));
        check("a.example/path", Err(()));
    }
}
