//! Maps an error (with its whole source chain) to a [`FailureClass`].
//!
//! The chain is walked from the outside in; the first layer that says something
//! decisive wins: a rustls error is `tls`; an `io::Error` of kind
//! `ConnectionRefused` is `refused`, `ConnectionReset`/`ConnectionAborted`/
//! `BrokenPipe`/`UnexpectedEof` are `reset`, `TimedOut` is `timeout`; an elapsed
//! timer is `timeout`; hyper's "connection closed before the message completed" is
//! `reset`. Anything else is `other`.
//!
//! One subtlety: `io::Error::source()` skips the error it wraps (it returns the
//! wrapped error's *source*), and tokio-rustls reports TLS failures as an
//! `io::Error` wrapping the `rustls::Error`, so the wrapped error is looked at
//! explicitly through `io::Error::get_ref`.

use std::error::Error;
use std::io;

use super::FailureClass;

/// The class of `err`, from its whole source chain.
pub fn classify_error(err: &(dyn Error + 'static)) -> FailureClass {
    let mut current = Some(err);
    let mut depth = 0;
    while let Some(e) = current {
        if let Some(class) = classify_one(e, 0) {
            return class;
        }
        depth += 1;
        if depth > 32 {
            break;
        }
        current = e.source();
    }
    FailureClass::Other
}

/// The error and its sources as one line, without repeating a layer that only
/// restates the one below it.
pub(crate) fn chain(err: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) && parts.len() < 8 {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

fn classify_one(e: &(dyn Error + 'static), nesting: u8) -> Option<FailureClass> {
    if e.downcast_ref::<rustls::Error>().is_some() {
        return Some(FailureClass::Tls);
    }
    if e.downcast_ref::<tokio::time::error::Elapsed>().is_some() {
        return Some(FailureClass::Timeout);
    }
    if let Some(err) = e.downcast_ref::<reqwest::Error>() {
        if err.is_timeout() {
            return Some(FailureClass::Timeout);
        }
        return None;
    }
    if let Some(err) = e.downcast_ref::<hyper::Error>() {
        if err.is_timeout() {
            return Some(FailureClass::Timeout);
        }
        if err.is_incomplete_message() {
            return Some(FailureClass::Reset);
        }
        return None;
    }
    if let Some(err) = e.downcast_ref::<io::Error>() {
        if nesting < 4 {
            if let Some(inner) = err.get_ref() {
                let inner: &(dyn Error + 'static) = inner;
                if let Some(class) = classify_one(inner, nesting + 1) {
                    return Some(class);
                }
            }
        }
        return io_kind_class(err.kind());
    }
    None
}

fn io_kind_class(kind: io::ErrorKind) -> Option<FailureClass> {
    match kind {
        io::ErrorKind::ConnectionRefused => Some(FailureClass::Refused),
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => Some(FailureClass::Reset),
        io::ErrorKind::TimedOut => Some(FailureClass::Timeout),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer layer")]
    struct Outer(#[source] io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("wrapper")]
    struct Wrapper(#[source] Box<dyn Error + Send + Sync>);

    #[test]
    fn io_kinds_anywhere_in_the_chain() {
        let cases = [
            (io::ErrorKind::ConnectionRefused, FailureClass::Refused),
            (io::ErrorKind::ConnectionReset, FailureClass::Reset),
            (io::ErrorKind::BrokenPipe, FailureClass::Reset),
            (io::ErrorKind::UnexpectedEof, FailureClass::Reset),
            (io::ErrorKind::TimedOut, FailureClass::Timeout),
            (io::ErrorKind::PermissionDenied, FailureClass::Other),
        ];
        for (kind, want) in cases {
            let err = Outer(io::Error::from(kind));
            assert_eq!(classify_error(&err), want, "{kind:?}");
        }
    }

    #[test]
    fn rustls_errors_wrapped_in_io_errors_are_tls() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io_err = io::Error::new(io::ErrorKind::InvalidData, tls);
        let err = Wrapper(Box::new(Outer(io_err)));
        assert_eq!(classify_error(&err), FailureClass::Tls);
        assert!(chain(&err).contains("wrapper: outer layer"), "{}", chain(&err));
    }

    #[test]
    fn elapsed_timers_are_timeouts_and_unknown_errors_other() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let elapsed = rt.block_on(async {
            tokio::time::timeout(std::time::Duration::ZERO, std::future::pending::<()>())
                .await
                .unwrap_err()
        });
        assert_eq!(classify_error(&Wrapper(Box::new(elapsed))), FailureClass::Timeout);
        assert_eq!(classify_error(&Wrapper("garbage".into())), FailureClass::Other);
    }
}
