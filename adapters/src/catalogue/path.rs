//! Field paths (`members[].id_number`) and JSON pointers.

use serde_json::Value;

/// One step of a field path: a property name, or "each element" of an array.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    Key(String),
    Each,
}

/// Parses a dot-separated field path with `[]` after array properties.
/// Returns `None` for an empty or malformed path.
pub(crate) fn parse_field_path(path: &str) -> Option<Vec<Seg>> {
    if path.is_empty() {
        return None;
    }
    let mut segs = Vec::new();
    for part in path.split('.') {
        let (name, each) = match part.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (part, false),
        };
        if name.is_empty() || name.contains(['[', ']']) {
            return None;
        }
        segs.push(Seg::Key(name.to_owned()));
        if each {
            segs.push(Seg::Each);
        }
    }
    Some(segs)
}

/// Appends one JSON pointer token (RFC 6901 escaping) to `pointer`.
pub(crate) fn push_token(pointer: &mut String, token: &str) {
    pointer.push('/');
    for c in token.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

/// Appends an array index token to `pointer`.
pub(crate) fn push_index(pointer: &mut String, index: usize) {
    use std::fmt::Write;
    let _ = write!(pointer, "/{index}");
}

/// One step of the way to a visited value; rendered as a JSON pointer only
/// when needed (errors), so the valid path allocates nothing.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Tok<'s> {
    Key(&'s str),
    Index(usize),
}

/// Renders a trail of steps as a JSON pointer.
pub(crate) fn render(trail: &[Tok<'_>]) -> String {
    let mut p = String::new();
    for t in trail {
        match t {
            Tok::Key(k) => push_token(&mut p, k),
            Tok::Index(i) => push_index(&mut p, *i),
        }
    }
    p
}

/// Visits every value at `segs` under `value` with the trail leading to it.
/// Missing properties and values of the wrong container type are skipped
/// (JSON Schema reports those).
pub(crate) fn visit_mut<'s>(
    value: &mut Value,
    segs: &'s [Seg],
    trail: &mut Vec<Tok<'s>>,
    f: &mut dyn FnMut(&mut Value, &[Tok<'s>]),
) {
    let Some((first, rest)) = segs.split_first() else {
        f(value, trail);
        return;
    };
    match first {
        Seg::Key(k) => {
            if let Some(child) = value.as_object_mut().and_then(|o| o.get_mut(k.as_str())) {
                trail.push(Tok::Key(k));
                visit_mut(child, rest, trail, f);
                trail.pop();
            }
        }
        Seg::Each => {
            if let Some(items) = value.as_array_mut() {
                for (i, item) in items.iter_mut().enumerate() {
                    trail.push(Tok::Index(i));
                    visit_mut(item, rest, trail, f);
                    trail.pop();
                }
            }
        }
    }
}

/// Visits every value at `segs` under `value` (read-only).
pub(crate) fn visit(value: &Value, segs: &[Seg], f: &mut dyn FnMut(&Value)) {
    let Some((first, rest)) = segs.split_first() else {
        f(value);
        return;
    };
    match first {
        Seg::Key(k) => {
            if let Some(child) = value.as_object().and_then(|o| o.get(k.as_str())) {
                visit(child, rest, f);
            }
        }
        Seg::Each => {
            if let Some(items) = value.as_array() {
                for item in items {
                    visit(item, rest, f);
                }
            }
        }
    }
}

/// The value at a path without arrays (`head.address`), if present.
pub(crate) fn get<'a>(value: &'a Value, segs: &[Seg]) -> Option<&'a Value> {
    segs.iter().try_fold(value, |v, s| match s {
        Seg::Key(k) => v.get(k.as_str()),
        Seg::Each => None,
    })
}

/// The JSON pointer of a path without arrays.
pub(crate) fn pointer_of(segs: &[Seg]) -> String {
    let mut p = String::new();
    for s in segs {
        if let Seg::Key(k) = s {
            push_token(&mut p, k);
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_field_paths() {
        assert_eq!(
            parse_field_path("members[].id_number"),
            Some(vec![
                Seg::Key("members".into()),
                Seg::Each,
                Seg::Key("id_number".into())
            ])
        );
        assert_eq!(parse_field_path(""), None);
        assert_eq!(parse_field_path("a..b"), None);
        assert_eq!(parse_field_path("a[0]"), None);
    }

    #[test]
    fn pointers_escape_tokens() {
        let mut p = String::new();
        push_token(&mut p, "a/b~c");
        push_index(&mut p, 3);
        assert_eq!(p, "/a~1b~0c/3");
    }
}
