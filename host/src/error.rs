//! One text for an error and all its causes.

/// `e` and each of its sources, joined by ": ", once each: a source whose
/// text the message already holds (a wrapper that repeats its cause) is
/// not said again.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    enum E {
        #[error("io error")]
        Io(#[source] std::io::Error),
        #[error("reading x: {0}")]
        Repeats(#[source] std::io::Error),
        #[error("failed to create container")]
        Create(#[source] Box<E>),
    }

    #[test]
    fn every_cause_once() {
        let denied = || std::io::Error::from_raw_os_error(libc::EACCES);
        let e = E::Create(Box::new(E::Io(denied())));
        assert_eq!(chain(&e), "failed to create container: io error: Permission denied (os error 13)");
        assert_eq!(chain(&E::Repeats(denied())), "reading x: Permission denied (os error 13)");
    }
}
