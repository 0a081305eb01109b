//! A serde `Deserializer` over a `marked_yaml` node tree that keeps source
//! positions, so configuration errors can be reported as `FILE:LINE:COL: msg`.
//!
//! Scalars are resolved with the YAML 1.2 core schema (unquoted only; quoted
//! scalars are always strings). Every error that leaves a nested
//! deserialization without a position gets the position of the node being
//! deserialized at that level, so the innermost position wins.

use std::fmt;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{parse_yaml_with_options, LoadError, LoaderOptions, Marker, Node, Span};
use serde::de::{
    self, DeserializeSeed, EnumAccess, Error as _, MapAccess, SeqAccess, Unexpected, VariantAccess,
    Visitor,
};

/// A position in the file, 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Mark {
    pub line: usize,
    pub col: usize,
}

impl Mark {
    /// Where a node starts. For a mapping this is the earlier of the mapping's
    /// own start and its first key (marked-yaml puts a block mapping's start on
    /// the first key's `:`; a flow mapping's start is its `{`).
    pub fn of(node: &Node) -> Mark {
        let own = Self::from_marker(node.span().start());
        match node {
            Node::Mapping(m) => match m.keys().next().map(Mark::of_scalar) {
                Some(k) if own.line == 0 || (k.line, k.col) < (own.line, own.col) => k,
                _ => own,
            },
            _ => own,
        }
    }

    /// Where a scalar (e.g. a mapping key) starts.
    pub fn of_scalar(s: &MarkedScalarNode) -> Mark {
        Self::from_marker(s.span().start())
    }

    fn from_marker(m: Option<&Marker>) -> Mark {
        m.map(|m| Mark {
            line: m.line(),
            col: m.column(),
        })
        .unwrap_or_default()
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// An error with the position of the node that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    pub message: String,
    pub mark: Option<Mark>,
}

impl DeError {
    fn new(message: impl Into<String>, mark: Mark) -> Self {
        DeError {
            message: message.into(),
            mark: Some(mark).filter(|m| m.line > 0),
        }
    }

    /// `FILE:LINE:COL: message`, or `FILE: message` without a position.
    pub fn render(&self, file: &str) -> String {
        match self.mark {
            Some(m) => format!("{file}:{m}: {}", self.message),
            None => format!("{file}: {}", self.message),
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            mark: None,
        }
    }
}

/// Fill in a missing mark; never overwrite one (the innermost mark wins).
trait AtMark<T> {
    fn at(self, mark: Mark) -> Result<T, DeError>;
}

impl<T> AtMark<T> for Result<T, DeError> {
    fn at(self, mark: Mark) -> Result<T, DeError> {
        self.map_err(|mut e| {
            if e.mark.is_none() && mark.line > 0 {
                e.mark = Some(mark);
            }
            e
        })
    }
}

/// Parse YAML text into a node tree whose top level is a mapping.
pub fn parse(text: &str) -> Result<Node, DeError> {
    // yaml-rust2 keeps a leading BOM as part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let opts = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    let has_content = scan_documents(text)?;
    match parse_yaml_with_options(0, text, opts) {
        Ok(node) => Ok(node),
        // `---` alone: an explicitly empty document is an empty config.
        Err(LoadError::TopLevelMustBeMapping(_)) if !has_content => Ok(Node::from(
            MarkedMappingNode::new_empty(Span::new_start(Marker::new(0, 0, 1, 1))),
        )),
        Err(e) => Err(load_error(e)),
    }
}

fn load_error(e: LoadError) -> DeError {
    let m = |m: Marker| Mark {
        line: m.line(),
        col: m.column(),
    };
    const ALIASES: &str = "YAML anchors and aliases (`&name`, `*name`) are not supported";
    match e {
        LoadError::TopLevelMustBeMapping(p) => DeError::new(
            "the top level of the file must be a mapping of `key: value` pairs",
            m(p),
        ),
        LoadError::TopLevelMustBeSequence(p) => {
            DeError::new("the top level of the file must be a sequence", m(p))
        }
        LoadError::UnexpectedAnchor(p) => DeError::new(ALIASES, m(p)),
        LoadError::MappingKeyMustBeScalar(p) => DeError::new(
            "mapping keys must be scalars, not mappings or sequences",
            m(p),
        ),
        LoadError::UnexpectedTag(p) => {
            DeError::new("YAML tags (such as `!!str`) are not supported", m(p))
        }
        LoadError::ScanError(p, se) if se.info().contains("unknown anchor") => {
            DeError::new(ALIASES, m(p))
        }
        LoadError::ScanError(p, se) => {
            DeError::new(format!("YAML syntax error: {}", se.info()), m(p))
        }
        LoadError::DuplicateKey(dup) => {
            let first = Mark::of_scalar(&dup.prev_key);
            DeError::new(
                format!(
                    "duplicate key `{}` (first defined at {first})",
                    dup.key.as_str()
                ),
                Mark::of_scalar(&dup.key),
            )
        }
    }
}

/// marked-yaml parses only the first document of a stream and silently drops
/// the rest: refuse a second document. Returns whether there is any content
/// besides comments, directives and document markers.
fn scan_documents(text: &str) -> Result<bool, DeError> {
    #[derive(PartialEq)]
    enum State {
        Before,
        In,
        Ended,
    }
    let (mut state, mut content) = (State::Before, false);
    for (i, line) in text.lines().enumerate() {
        let marker = |m: &str| {
            let rest = line.strip_prefix(m);
            rest.is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t']))
        };
        let blank = |t: &str| t.is_empty() || t.starts_with('#');
        let second =
            if blank(line.trim_start()) || (state == State::Before && line.starts_with('%')) {
                false
            } else if marker("---") {
                content |= !blank(line[3..].trim_start());
                std::mem::replace(&mut state, State::In) != State::Before
            } else if marker("...") {
                state = State::Ended;
                false
            } else {
                content = true;
                std::mem::replace(&mut state, State::In) == State::Ended
            };
        if second {
            let msg = "multiple YAML documents in one file are not supported";
            return Err(DeError::new(
                msg,
                Mark {
                    line: i + 1,
                    col: 1,
                },
            ));
        }
    }
    Ok(content)
}

/// Deserialize any `T` from a node; errors carry the innermost node's mark.
pub fn from_node<'de, T: de::Deserialize<'de>>(node: &'de Node) -> Result<T, DeError> {
    let de = De::node(node);
    let mark = de.mark;
    T::deserialize(de).at(mark)
}

/// The value node of `key` in a mapping node.
pub fn get<'a>(map: &'a Node, key: &str) -> Option<&'a Node> {
    map.as_mapping()?.get_node(key)
}

/// The mark of `key` itself in a mapping node.
pub fn key_mark(map: &Node, key: &str) -> Option<Mark> {
    let m = map.as_mapping()?;
    m.keys().find(|k| k.as_str() == key).map(Mark::of_scalar)
}

/// `(key, value)` pairs of a mapping node in file order; empty otherwise.
pub fn entries(map: &Node) -> Vec<(&MarkedScalarNode, &Node)> {
    map.as_mapping()
        .map(|m| m.iter().collect())
        .unwrap_or_default()
}

/// The elements of a sequence node.
pub fn items(seq: &Node) -> Option<&[Node]> {
    seq.as_sequence().map(|s| s.as_slice())
}

/// A scalar resolved with the YAML 1.2 core schema.
enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i128),
    /// Integer syntax, but beyond 128 bits.
    BigInt,
    Float(f64),
    Str(&'a str),
}

fn resolve(s: &MarkedScalarNode) -> Scalar<'_> {
    let t = s.as_str();
    if !s.may_coerce() {
        return Scalar::Str(t);
    }
    match t {
        "" | "~" | "null" | "Null" | "NULL" => Scalar::Null,
        "true" | "True" | "TRUE" => Scalar::Bool(true),
        "false" | "False" | "FALSE" => Scalar::Bool(false),
        _ => parse_int(t)
            .or_else(|| parse_float(t).map(Scalar::Float))
            .unwrap_or(Scalar::Str(t)),
    }
}

fn parse_int(t: &str) -> Option<Scalar<'static>> {
    let (neg, digits, radix) = if let Some(h) = t.strip_prefix("0x") {
        (false, h, 16)
    } else if let Some(o) = t.strip_prefix("0o") {
        (false, o, 8)
    } else if let Some(d) = t.strip_prefix('-') {
        (true, d, 10)
    } else {
        (false, t.strip_prefix('+').unwrap_or(t), 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    Some(match i128::from_str_radix(digits, radix) {
        Ok(v) if neg => Scalar::Int(-v),
        Ok(v) => Scalar::Int(v),
        Err(_) => Scalar::BigInt,
    })
}

fn parse_float(t: &str) -> Option<f64> {
    let body = t.strip_prefix(['-', '+']).unwrap_or(t);
    let sign = if t.starts_with('-') { -1.0 } else { 1.0 };
    if matches!(body, ".inf" | ".Inf" | ".INF") {
        return Some(sign * f64::INFINITY);
    }
    if matches!(t, ".nan" | ".NaN" | ".NAN") {
        return Some(f64::NAN);
    }
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let (mantissa, exp) = match body.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['-', '+']).unwrap_or(e))),
        None => (body, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let ok = digits(int)
        && digits(frac)
        && (!int.is_empty() || !frac.is_empty())
        && exp.is_none_or(|e| !e.is_empty() && digits(e));
    if ok {
        t.parse().ok()
    } else {
        None
    }
}

fn unexpected(kind: Kind<'_>) -> Unexpected<'_> {
    match kind {
        Kind::Mapping(_) => Unexpected::Map,
        Kind::Sequence(_) => Unexpected::Seq,
        Kind::Scalar(s) => match resolve(s) {
            Scalar::Null => Unexpected::Other("null"),
            Scalar::Bool(b) => Unexpected::Bool(b),
            Scalar::Int(i) => match (u64::try_from(i), i64::try_from(i)) {
                (Ok(u), _) => Unexpected::Unsigned(u),
                (_, Ok(i)) => Unexpected::Signed(i),
                _ => Unexpected::Other("integer"),
            },
            Scalar::BigInt => Unexpected::Other("integer"),
            Scalar::Float(f) => Unexpected::Float(f),
            Scalar::Str(t) => Unexpected::Str(t),
        },
    }
}

#[derive(Clone, Copy)]
enum Kind<'de> {
    Scalar(&'de MarkedScalarNode),
    Mapping(&'de MarkedMappingNode),
    Sequence(&'de [Node]),
}

/// The deserializer for one node. `key` nodes (mapping keys, variant names)
/// always present themselves as strings to `deserialize_any`.
pub struct De<'de> {
    kind: Kind<'de>,
    mark: Mark,
    key: bool,
}

/// The deserializer over one node (for callers that pick the target type at run time).
pub type NodeDe<'de> = De<'de>;

impl<'de> De<'de> {
    pub fn new(n: &'de Node) -> Self {
        Self::node(n)
    }

    fn node(n: &'de Node) -> Self {
        let kind = match n {
            Node::Scalar(s) => Kind::Scalar(s),
            Node::Mapping(m) => Kind::Mapping(m),
            Node::Sequence(s) => Kind::Sequence(s.as_slice()),
        };
        De {
            kind,
            mark: Mark::of(n),
            key: false,
        }
    }

    /// A mapping value. An empty plain scalar (`key:` with nothing after it)
    /// is marked by marked-yaml at the *next* token, so use the key's mark.
    fn value(n: &'de Node, key_mark: Mark) -> Self {
        let mut de = Self::node(n);
        if matches!(n, Node::Scalar(s) if s.as_str().is_empty() && s.may_coerce()) {
            de.mark = key_mark;
        }
        de
    }

    fn key(s: &'de MarkedScalarNode) -> Self {
        De {
            kind: Kind::Scalar(s),
            mark: Mark::of_scalar(s),
            key: true,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Scalar(s) if matches!(resolve(s), Scalar::Null))
    }

    fn mismatch(&self, expected: &str) -> DeError {
        DeError::invalid_type(unexpected(self.kind), &expected)
    }

    /// Integers beyond 64 bits only reach visitors that asked for 128 bits.
    fn visit_int<V: Visitor<'de>>(&self, i: i128, v: V, wide: bool) -> Result<V::Value, DeError> {
        match (u64::try_from(i), i64::try_from(i), u128::try_from(i)) {
            (Ok(u), _, _) => v.visit_u64(u),
            (_, Ok(s), _) => v.visit_i64(s),
            (_, _, Ok(u)) if wide => v.visit_u128(u),
            _ if wide => v.visit_i128(i),
            _ => Err(self.out_of_range(&v)),
        }
    }

    fn out_of_range(&self, exp: &dyn de::Expected) -> DeError {
        let text = match self.kind {
            Kind::Scalar(s) => s.as_str(),
            _ => "",
        };
        DeError::invalid_value(Unexpected::Other(&format!("integer `{text}`")), exp)
    }

    /// bool, numbers: visit the resolved scalar.
    fn scalar<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.number(v, false)
    }

    fn wide<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.number(v, true)
    }

    fn number<V: Visitor<'de>>(self, v: V, wide: bool) -> Result<V::Value, DeError> {
        let mark = self.mark;
        let s = match self.kind {
            Kind::Scalar(s) => s,
            _ => return Err(DeError::invalid_type(unexpected(self.kind), &v)).at(mark),
        };
        match resolve(s) {
            Scalar::Null => Err(DeError::invalid_type(Unexpected::Other("null"), &v)),
            Scalar::Bool(b) => v.visit_bool(b),
            Scalar::Int(i) => self.visit_int(i, v, wide),
            Scalar::BigInt => Err(self.out_of_range(&v)),
            Scalar::Float(f) => v.visit_f64(f),
            Scalar::Str(t) => v.visit_borrowed_str(t),
        }
        .at(mark)
    }

    /// str, string, char, identifier: the text of any non-null scalar.
    fn text<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.kind {
            Kind::Scalar(s) if self.key || !self.is_null() => v.visit_borrowed_str(s.as_str()),
            _ => Err(self.mismatch("a string")),
        }
        .at(self.mark)
    }

    fn mapping<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.kind {
            Kind::Mapping(m) => visit_map(m.iter(), v),
            _ if self.is_null() && !self.key => visit_map(std::iter::empty(), v),
            _ => Err(self.mismatch("a mapping")),
        }
        .at(self.mark)
    }
}

fn visit_map<'de, I, V>(iter: I, v: V) -> Result<V::Value, DeError>
where
    I: Iterator<Item = (&'de MarkedScalarNode, &'de Node)>,
    V: Visitor<'de>,
{
    let mut access = MapAcc {
        iter: iter.peekable(),
        value: None,
    };
    let out = v.visit_map(&mut access)?;
    match access.iter.peek() {
        Some((k, _)) => Err(DeError::new(
            format!("unexpected extra key `{}`", k.as_str()),
            Mark::of_scalar(k),
        )),
        None => Ok(out),
    }
}

/// Forward `deserialize_*` methods that ignore their extra arguments.
macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*) => $target:ident;)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* v: V) -> Result<V::Value, DeError> {
            self.$target(v)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for De<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.kind {
            Kind::Scalar(_) if self.key => self.text(v),
            Kind::Scalar(_) if self.is_null() => v.visit_unit().at(self.mark),
            Kind::Scalar(_) => self.scalar(v),
            Kind::Mapping(_) => self.mapping(v),
            Kind::Sequence(_) => self.deserialize_seq(v),
        }
    }

    forward! {
        deserialize_bool() => scalar; deserialize_f32() => scalar; deserialize_f64() => scalar;
        deserialize_i8() => scalar; deserialize_i16() => scalar; deserialize_i32() => scalar;
        deserialize_i64() => scalar; deserialize_u8() => scalar; deserialize_u16() => scalar;
        deserialize_u32() => scalar; deserialize_u64() => scalar;
        deserialize_i128() => wide; deserialize_u128() => wide;
        deserialize_char() => text; deserialize_str() => text; deserialize_string() => text;
        deserialize_identifier() => text;
        deserialize_byte_buf() => deserialize_bytes;
        deserialize_unit_struct(_name: &'static str) => deserialize_unit;
        deserialize_tuple(_len: usize) => deserialize_seq;
        deserialize_tuple_struct(_name: &'static str, _len: usize) => deserialize_seq;
        deserialize_map() => mapping;
        deserialize_struct(_name: &'static str, _fields: &'static [&'static str]) => mapping;
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.kind {
            Kind::Scalar(s) if !self.is_null() => v.visit_borrowed_bytes(s.as_str().as_bytes()),
            Kind::Sequence(_) => return self.deserialize_seq(v),
            _ => Err(self.mismatch("a string or a sequence of bytes")),
        }
        .at(self.mark)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let mark = self.mark;
        if self.is_null() && !self.key {
            v.visit_none().at(mark)
        } else {
            v.visit_some(self).at(mark)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        if self.is_null() && !self.key {
            v.visit_unit().at(self.mark)
        } else {
            Err(self.mismatch("null")).at(self.mark)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        let mark = self.mark;
        v.visit_newtype_struct(self).at(mark)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let Kind::Sequence(items) = self.kind else {
            return Err(self.mismatch("a sequence")).at(self.mark);
        };
        let mut access = SeqAcc { iter: items.iter() };
        let out = v.visit_seq(&mut access).at(self.mark)?;
        match access.iter.next() {
            Some(extra) => {
                let consumed = items.len() - access.iter.len() - 1;
                let msg = format!(
                    "too many elements: expected {consumed}, found {}",
                    items.len()
                );
                Err(DeError::new(msg, Mark::of(extra)))
            }
            None => Ok(out),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        let (variant, value) = match self.kind {
            Kind::Scalar(_) if self.is_null() && !self.key => {
                let e = DeError::invalid_type(Unexpected::Other("null"), &v);
                return Err(e).at(self.mark);
            }
            Kind::Scalar(s) => (s, None),
            Kind::Mapping(m) => match (m.iter().next(), m.len()) {
                (Some((k, val)), 1) => (k, Some(val)),
                (_, n) => {
                    let msg = format!(
                        "expected a variant name, or a mapping with exactly one key \
                         (the variant name), found a mapping with {n} keys"
                    );
                    return Err(DeError::new(msg, self.mark));
                }
            },
            Kind::Sequence(_) => return Err(self.mismatch("an enum variant")).at(self.mark),
        };
        v.visit_enum(EnumAcc { variant, value }).at(self.mark)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }
}

struct MapAcc<'de, I: Iterator<Item = (&'de MarkedScalarNode, &'de Node)>> {
    iter: std::iter::Peekable<I>,
    /// The value of the key just returned, with the key's mark.
    value: Option<(&'de Node, Mark)>,
}

impl<'de, I> MapAccess<'de> for MapAcc<'de, I>
where
    I: Iterator<Item = (&'de MarkedScalarNode, &'de Node)>,
{
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((k, v)) = self.iter.next() else {
            return Ok(None);
        };
        let mark = Mark::of_scalar(k);
        self.value = Some((v, mark));
        seed.deserialize(De::key(k)).at(mark).map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, DeError> {
        let (v, key_mark) = self
            .value
            .take()
            .ok_or_else(|| DeError::custom("mapping value requested before its key"))?;
        let de = De::value(v, key_mark);
        let mark = de.mark;
        seed.deserialize(de).at(mark)
    }

    fn size_hint(&self) -> Option<usize> {
        self.iter.size_hint().1
    }
}

struct SeqAcc<'de> {
    iter: std::slice::Iter<'de, Node>,
}

impl<'de> SeqAccess<'de> for SeqAcc<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(n) = self.iter.next() else {
            return Ok(None);
        };
        let de = De::node(n);
        let mark = de.mark;
        seed.deserialize(de).at(mark).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// `variant` or `{variant: value}`.
struct EnumAcc<'de> {
    variant: &'de MarkedScalarNode,
    value: Option<&'de Node>,
}

impl<'de> EnumAccess<'de> for EnumAcc<'de> {
    type Error = DeError;
    type Variant = VariantAcc<'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, VariantAcc<'de>), DeError> {
        let mark = Mark::of_scalar(self.variant);
        let variant = seed.deserialize(De::key(self.variant)).at(mark)?;
        let value = self.value.map(|n| De::value(n, mark));
        Ok((variant, VariantAcc { value, mark }))
    }
}

struct VariantAcc<'de> {
    value: Option<De<'de>>,
    mark: Mark,
}

impl VariantAcc<'_> {
    fn no_value(&self, what: &str) -> DeError {
        DeError::new(
            format!("invalid type: unit variant, expected {what}"),
            self.mark,
        )
    }
}

impl<'de> VariantAccess<'de> for VariantAcc<'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.value {
            Some(de) if !de.is_null() => Err(de.mismatch("nothing (a unit variant)")).at(de.mark),
            _ => Ok(()),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        match self.value {
            Some(de) => {
                let mark = de.mark;
                seed.deserialize(de).at(mark)
            }
            None => Err(self.no_value("a newtype variant")),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        match self.value {
            Some(de) => de::Deserializer::deserialize_seq(de, v),
            None => Err(self.no_value("a tuple variant")),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        match self.value {
            Some(de) => de.mapping(v),
            None => Err(self.no_value("a struct variant")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    fn de<T: for<'a> Deserialize<'a>>(text: &str) -> Result<T, DeError> {
        let node = parse(text)?;
        from_node(&node)
    }

    fn err<T: for<'a> Deserialize<'a> + fmt::Debug>(text: &str) -> DeError {
        de::<T>(text).expect_err("expected an error")
    }

    fn at(line: usize, col: usize) -> Option<Mark> {
        Some(Mark { line, col })
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct One<T> {
        v: T,
    }

    fn one<T: for<'a> Deserialize<'a>>(value: &str) -> Result<T, DeError> {
        de::<One<T>>(&format!("v: {value}\n")).map(|o| o.v)
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(untagged)]
    enum Any {
        Null(()),
        Bool(bool),
        U(u64),
        I(i64),
        F(f64),
        S(String),
        L(Vec<Any>),
        M(BTreeMap<String, Any>),
    }

    #[test]
    fn resolves_core_schema_scalars() {
        for t in ["null", "Null", "NULL", "~", ""] {
            assert_eq!(one::<Any>(t), Ok(Any::Null(())), "{t}");
        }
        for (t, b) in [("true", true), ("True", true), ("TRUE", true)] {
            assert_eq!(one::<Any>(t), Ok(Any::Bool(b)));
        }
        for t in ["false", "False", "FALSE"] {
            assert_eq!(one::<Any>(t), Ok(Any::Bool(false)));
        }
        for (t, n) in [("0", 0), ("42", 42), ("+7", 7), ("0x1F", 31), ("0o17", 15)] {
            assert_eq!(one::<Any>(t), Ok(Any::U(n)), "{t}");
        }
        assert_eq!(one::<Any>("-12"), Ok(Any::I(-12)));
        for (t, f) in [
            ("1.5", 1.5),
            ("-2e3", -2000.0),
            ("1.", 1.0),
            (".5", 0.5),
            ("1E+2", 100.0),
        ] {
            assert_eq!(one::<Any>(t), Ok(Any::F(f)), "{t}");
        }
        assert_eq!(one::<f64>(".inf"), Ok(f64::INFINITY));
        assert_eq!(one::<f64>("-.Inf"), Ok(f64::NEG_INFINITY));
        assert!(one::<f64>(".NaN").is_ok_and(f64::is_nan));
        for t in [
            "yes", "on", "nan", "inf", "0x", "1.2.3", "1e", "12abc", ".", "-x", "0b1",
        ] {
            assert_eq!(one::<Any>(t), Ok(Any::S(t.to_string())), "{t}");
        }
        assert_eq!(
            one::<Any>("[1, a]"),
            Ok(Any::L(vec![Any::U(1), Any::S("a".into())]))
        );
        let m = one::<Any>("{k: ~}");
        assert_eq!(m, Ok(Any::M(BTreeMap::from([("k".into(), Any::Null(()))]))));
    }

    #[test]
    fn typed_scalars() {
        assert_eq!(one::<bool>("true"), Ok(true));
        assert_eq!(one::<u8>("255"), Ok(255));
        assert_eq!(one::<i16>("-300"), Ok(-300));
        assert_eq!(one::<u32>("0x10"), Ok(16));
        assert_eq!(one::<i64>("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(one::<u64>("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(one::<u128>("18446744073709551616"), Ok(1u128 << 64));
        assert_eq!(one::<i128>("-18446744073709551616"), Ok(-(1i128 << 64)));
        assert_eq!(one::<f32>("2.5"), Ok(2.5));
        assert_eq!(one::<f64>("5"), Ok(5.0));
        assert_eq!(one::<char>("x"), Ok('x'));
        assert_eq!(one::<String>("hello world"), Ok("hello world".into()));
        assert_eq!(one::<String>("12"), Ok("12".into()));
        assert_eq!(one::<String>("true"), Ok("true".into()));
        assert_eq!(one::<String>("1.5"), Ok("1.5".into()));
        assert_eq!(one::<()>("~"), Ok(()));
        assert_eq!(one::<Vec<u8>>("[1, 2]"), Ok(vec![1, 2]));
        assert_eq!(one::<(u8, String)>("[1, b]"), Ok((1, "b".into())));
        let e = one::<u32>("abc").expect_err("abc");
        assert_eq!(e.message, "invalid type: string \"abc\", expected u32");
        assert_eq!(e.mark, at(1, 4));
        let e = one::<u16>("70000").expect_err("70000");
        assert_eq!(e.message, "invalid value: integer `70000`, expected u16");
        assert_eq!(one::<u8>("-1").map_err(|e| e.mark), Err(at(1, 4)));
        assert!(one::<bool>("yes").is_err());
        assert!(one::<bool>("1").is_err());
        assert!(one::<u32>("1.5").is_err());
        assert!(one::<(u8, u8)>("[1, 2, 3]").is_err());
        assert!(one::<()>("0").is_err());
        let e = one::<u32>("").expect_err("null");
        assert_eq!(e.message, "invalid type: null, expected u32");
        assert_eq!(e.mark, at(1, 1), "empty value is marked at its key");
    }

    #[test]
    fn u64_overflow() {
        let e = one::<u64>("18446744073709551616").expect_err("overflow");
        assert_eq!(
            e.message,
            "invalid value: integer `18446744073709551616`, expected u64"
        );
        assert_eq!(e.mark, at(1, 4));
        let huge = "1".repeat(50);
        let e = one::<u64>(&huge).expect_err("huge");
        assert_eq!(
            e.message,
            format!("invalid value: integer `{huge}`, expected u64")
        );
        assert!(one::<i64>("-9223372036854775809").is_err());
        assert_eq!(one::<String>(&huge), Ok(huge));
    }

    #[test]
    fn quoted_scalars_are_strings() {
        assert_eq!(one::<Any>("\"12\""), Ok(Any::S("12".into())));
        assert_eq!(one::<Any>("'true'"), Ok(Any::S("true".into())));
        assert_eq!(one::<Any>("'~'"), Ok(Any::S("~".into())));
        assert_eq!(one::<Any>("\"\""), Ok(Any::S(String::new())));
        assert_eq!(one::<Option<String>>("\"\""), Ok(Some(String::new())));
        assert_eq!(one::<Option<String>>("'null'"), Ok(Some("null".into())));
        assert_eq!(
            de::<One<String>>("v: |\n  a\n  b\n").map(|o| o.v),
            Ok("a\nb\n".into())
        );
        let e = one::<u16>("\"8080\"").expect_err("quoted number");
        assert_eq!(e.message, "invalid type: string \"8080\", expected u16");
        assert_eq!(e.mark, at(1, 4));
        assert!(one::<bool>("'true'").is_err());
    }

    #[test]
    fn option_and_null() {
        assert_eq!(one::<Option<u32>>(""), Ok(None));
        assert_eq!(one::<Option<u32>>("~"), Ok(None));
        assert_eq!(one::<Option<u32>>("null"), Ok(None));
        assert_eq!(one::<Option<u32>>("3"), Ok(Some(3)));
        let e = one::<String>("~").expect_err("null string");
        assert_eq!(e.message, "invalid type: null, expected a string");
        #[derive(Deserialize, Debug, PartialEq, Default)]
        struct O {
            a: Option<u32>,
            b: Option<String>,
        }
        assert_eq!(
            de::<O>("a:\nb: x\n"),
            Ok(O {
                a: None,
                b: Some("x".into())
            })
        );
        assert_eq!(de::<O>(""), Ok(O::default()));
    }

    #[derive(Deserialize, Debug, PartialEq, Default)]
    #[serde(deny_unknown_fields)]
    struct Server {
        listen: Option<String>,
        workers: Option<u32>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Route {
        path: String,
        #[serde(default)]
        passthrough: bool,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[serde(default)]
        server: Server,
        #[serde(default)]
        routes: Vec<Route>,
    }

    #[test]
    fn struct_from_null_and_deny_unknown_fields() {
        let c = de::<Config>("server:\nroutes:\n  - path: /a\n").expect("config");
        assert_eq!(c.server, Server::default());
        assert_eq!(
            c.routes,
            vec![Route {
                path: "/a".into(),
                passthrough: false
            }]
        );
        let c = de::<Config>("server: {listen: ':80', workers: 2}\n").expect("flow");
        assert_eq!(c.server.workers, Some(2));
        assert_eq!(c.server.listen.as_deref(), Some(":80"));
    }

    #[test]
    fn unknown_field_has_key_position() {
        let e = err::<Config>("server:\n  listen: x\n    \n  wrkers: 4\n");
        assert!(
            e.message.starts_with("unknown field `wrkers`, expected"),
            "{e:?}"
        );
        assert_eq!(e.mark, at(4, 3));
        let e = err::<Config>("routes:\n- {path: /, pasthrough: true}\n");
        assert!(e.message.starts_with("unknown field `pasthrough`"), "{e:?}");
        assert_eq!(e.mark, at(2, 13));
        assert_eq!(err::<Config>("\n\nextra: 1\n").mark, at(3, 1));
    }

    #[test]
    fn missing_field_has_mapping_position() {
        let text = "routes:\n  - path: /a\n  - passthrough: true\n    other: 1\n";
        let e = err::<Config>(text);
        assert_eq!(
            e.message,
            "unknown field `other`, expected `path` or `passthrough`"
        );
        let e = err::<Config>("routes:\n  - path: /a\n  -   passthrough: true\n");
        assert_eq!(e.message, "missing field `path`");
        assert_eq!(e.mark, at(3, 7), "at the mapping's first key");
        let e = err::<Config>("routes:\n  - {passthrough: true}\n");
        assert_eq!(
            (e.message.as_str(), e.mark),
            ("missing field `path`", at(2, 5))
        );
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Top {
            name: String,
        }
        assert_eq!(err::<Top>("").mark, at(1, 1));
        let e = err::<Top>("# hello\nother: 1\n");
        assert_eq!(
            (e.message.as_str(), e.mark),
            ("missing field `name`", at(2, 1))
        );
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Outer {
            inner: Top,
        }
        let e = err::<Outer>("inner:\n");
        assert_eq!(
            (e.message.as_str(), e.mark),
            ("missing field `name`", at(1, 1))
        );
    }

    #[test]
    fn type_mismatch_in_nested_list_of_structs() {
        let text = "\
routes:
  - path: /a
  - path: /b
    passthrough: false
  - path: /c
    passthrough: maybe
";
        let e = err::<Config>(text);
        assert_eq!(
            e.message,
            "invalid type: string \"maybe\", expected a boolean"
        );
        assert_eq!(e.mark, at(6, 18));
        let e = err::<Config>("routes:\n  - path: [1]\n");
        assert_eq!(e.message, "invalid type: sequence, expected a string");
        assert_eq!(e.mark, at(2, 11));
        let e = err::<Config>("routes: {path: x}\n");
        assert_eq!(e.message, "invalid type: map, expected a sequence");
        assert_eq!(e.mark, at(1, 9));
        let e = err::<Config>("server: localhost\n");
        assert_eq!(
            e.message,
            "invalid type: string \"localhost\", expected a mapping"
        );
        assert_eq!(e.mark, at(1, 9));
        let e = err::<Config>("routes:\n  - x\n  - 3\n");
        assert_eq!(e.mark, at(2, 5));
    }

    #[derive(Debug, PartialEq)]
    struct Duration(u64);

    impl<'de> Deserialize<'de> for Duration {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let s = String::deserialize(d)?;
            match s.strip_suffix('s').and_then(|n| n.parse().ok()) {
                Some(n) => Ok(Duration(n)),
                None => Err(D::Error::custom(format!("bad duration `{s}`"))),
            }
        }
    }

    #[test]
    fn custom_error_position() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            timeouts: BTreeMap<String, Duration>,
        }
        let t = de::<T>("timeouts:\n  read: 15s\n").expect("ok");
        assert_eq!(t.timeouts["read"], Duration(15));
        let e = err::<T>("timeouts:\n  read: 15s\n  write:   15x\n");
        assert_eq!(e.message, "bad duration `15x`");
        assert_eq!(e.mark, at(3, 12));
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
    enum Plugin {
        RateLimit { per_second: u32, burst: Option<u32> },
        Cors,
    }

    #[test]
    fn internally_tagged_enum() {
        #[derive(Deserialize, Debug)]
        struct P {
            plugins: Vec<Plugin>,
        }
        let text = "plugins:\n  - name: rate_limit\n    per_second: 100\n  - name: cors\n";
        let p = de::<P>(text).expect("plugins");
        let want = [
            Plugin::RateLimit {
                per_second: 100,
                burst: None,
            },
            Plugin::Cors,
        ];
        assert_eq!(p.plugins, want);
        // Unknown variant: marked at the tag's value.
        let e = err::<P>("plugins:\n  - name: rate_limt\n    per_second: 1\n");
        assert!(
            e.message.starts_with("unknown variant `rate_limt`"),
            "{e:?}"
        );
        assert_eq!(e.mark, at(2, 11));
        // Errors in buffered variant fields: marked at the mapping.
        let e = err::<P>("plugins:\n  - name: cors\n  - name: rate_limit\n    per_second: x\n");
        assert_eq!(e.message, "invalid type: string \"x\", expected u32");
        assert_eq!(e.mark, at(3, 5));
        let e = err::<P>("plugins:\n  - per_second: 1\n");
        assert_eq!(
            (e.message.as_str(), e.mark),
            ("missing field `name`", at(2, 5))
        );
        let e = err::<P>("plugins:\n  - name: rate_limit\n");
        assert_eq!(e.message, "missing field `per_second`");
        assert_eq!(e.mark, at(2, 5));
        let e = err::<P>("plugins:\n  - name: rate_limit\n    per_second: 99999999999\n");
        assert_eq!(e.mark, at(2, 5));
        let e = err::<P>(
            "plugins:\n  - per_second: 1\n    burst: 2\n    name: rate_limit\n    brust: 3\n",
        );
        assert!(e.message.starts_with("unknown field `brust`"), "{e:?}");
        assert_eq!(e.mark, at(2, 5), "buffered: the mapping's first key");
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Session,
        Transaction,
        Weighted(u32),
        Pair(u8, u8),
        Pool { size: u32 },
    }

    #[test]
    fn externally_tagged_enum() {
        assert_eq!(one::<Mode>("session"), Ok(Mode::Session));
        assert_eq!(one::<Mode>("'transaction'"), Ok(Mode::Transaction));
        assert_eq!(one::<Mode>("{session: }"), Ok(Mode::Session));
        assert_eq!(one::<Mode>("{weighted: 3}"), Ok(Mode::Weighted(3)));
        assert_eq!(one::<Mode>("\n  pair: [1, 2]"), Ok(Mode::Pair(1, 2)));
        assert_eq!(
            one::<Mode>("\n  pool:\n    size: 4"),
            Ok(Mode::Pool { size: 4 })
        );
        let e = one::<Mode>("sesion").expect_err("typo");
        assert!(e
            .message
            .starts_with("unknown variant `sesion`, expected one of"));
        assert_eq!(e.mark, at(1, 4));
        let e = one::<Mode>("\n  pool:\n    size: big").expect_err("size");
        assert_eq!(e.mark, at(3, 11));
        let e = one::<Mode>("\n  pool:\n    sise: 1").expect_err("field");
        assert_eq!(e.mark, at(3, 5));
        let e = one::<Mode>("{a: 1, b: 2}").expect_err("two keys");
        assert!(e.message.contains("exactly one key"), "{e:?}");
        assert_eq!(e.mark, at(1, 4));
        assert!(one::<Mode>("weighted").is_err());
        assert!(one::<Mode>("{session: 1}").is_err());
        assert!(one::<Mode>("[session]").is_err());
        assert_eq!(
            one::<Mode>("").map_err(|e| e.message),
            Err("invalid type: null, expected enum Mode".into())
        );
    }

    #[test]
    fn duplicate_key() {
        let e = parse("a: 1\nb:\n  c: 1\n  c: 2\n").expect_err("dup");
        assert_eq!(e.message, "duplicate key `c` (first defined at 3:3)");
        assert_eq!(e.mark, at(4, 3));
        // Keys compare by text: quoting does not make a different key.
        let e = parse("a: 1\n'a': 2\n").expect_err("quoted dup");
        assert_eq!(e.mark, at(2, 1));
    }

    #[test]
    fn syntax_errors_have_marks() {
        let e = parse("a: [1, 2\nb: 3\n").expect_err("unclosed");
        assert!(e.message.starts_with("YAML syntax error: "), "{e:?}");
        assert!(e.mark.is_some_and(|m| m.line >= 1 && m.col >= 1), "{e:?}");
        let e = parse("a:\n  b: 1\n c: 2\n").expect_err("indent");
        assert_eq!(e.mark, at(3, 3));
        assert!(parse("a: \"open\n").expect_err("quote").mark.is_some());
        let e = parse("a: !!str 1\n").expect_err("tag");
        assert!(e.message.contains("tags"));
        assert!(parse("? [a]\n: 1\n").is_err());
    }

    #[test]
    fn anchors_and_aliases_are_refused() {
        // marked-yaml marks the anchored node, not the `&`.
        let e = parse("a: &x 1\nb: *x\n").expect_err("anchor");
        assert!(e.message.contains("anchors and aliases"), "{e:?}");
        assert_eq!(e.mark, at(1, 7));
        let e = parse("b: *x\n").expect_err("alias");
        assert!(e.message.contains("anchors and aliases"), "{e:?}");
        assert_eq!(e.mark, at(1, 4));
        assert!(parse("base: &b {a: 1}\nx:\n  <<: *b\n").is_err());
    }

    #[test]
    fn empty_documents() {
        for t in [
            "",
            "\n\n",
            "# just a comment\n",
            "---\n",
            "---\n...\n",
            "{}",
        ] {
            let n = parse(t).expect(t);
            assert!(entries(&n).is_empty(), "{t:?}");
            assert_eq!(de::<Config>(t).map(|c| c.routes.len()), Ok(0));
        }
    }

    #[test]
    fn top_level_must_be_mapping() {
        for (t, m) in [
            ("- a\n- b\n", at(1, 1)),
            ("just text\n", at(1, 1)),
            ("---\n[1]\n", at(2, 1)),
        ] {
            let e = parse(t).expect_err(t);
            assert!(e.message.contains("must be a mapping"), "{e:?}");
            assert_eq!(e.mark, m, "{t:?}");
        }
    }

    #[test]
    fn multiple_documents_are_refused() {
        assert!(parse("---\na: 1\n...\n# end\n").is_ok());
        for (t, line) in [
            ("a: 1\n---\nb: 2\n", 2),
            ("a: 1\n...\nb: 2\n", 3),
            ("---\na: 1\n--- {b: 2}\n", 3),
        ] {
            let e = parse(t).expect_err(t);
            assert!(e.message.contains("multiple YAML documents"), "{e:?}");
            assert_eq!(e.mark, at(line, 1));
        }
    }

    #[test]
    fn byte_order_mark_and_crlf() {
        let n = parse("\u{feff}a: 1\r\nb: x\r\n").expect("bom");
        assert_eq!(key_mark(&n, "a"), at(1, 1));
        assert_eq!(key_mark(&n, "b"), at(2, 1));
        assert_eq!(Mark::of(get(&n, "b").expect("b")), Mark { line: 2, col: 4 });
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let e = parse(&format!("a: {}", "[".repeat(5000))).expect_err("deep");
        assert!(e.message.contains("recursion limit"), "{e:?}");
        let ok = format!("a: {}{}", "[".repeat(100), "]".repeat(100));
        assert!(from_node::<Any>(&parse(&ok).expect("100 deep")).is_ok());
    }

    #[test]
    fn tree_helpers() {
        let n = parse("a: 1\nlist:\n  - x\n  - y\n'q': {z: 2}\n").expect("parse");
        assert_eq!(key_mark(&n, "list"), at(2, 1));
        assert_eq!(key_mark(&n, "q"), at(5, 1));
        assert_eq!(key_mark(&n, "nope"), None);
        let list = get(&n, "list").expect("list");
        assert_eq!(Mark::of(list), Mark { line: 3, col: 3 });
        let xs = items(list).expect("items");
        assert_eq!(xs.len(), 2);
        assert_eq!(Mark::of(&xs[1]), Mark { line: 4, col: 5 });
        assert_eq!(items(&n), None);
        let keys: Vec<_> = entries(&n)
            .iter()
            .map(|(k, _)| k.as_str().to_owned())
            .collect();
        assert_eq!(keys, ["a", "list", "q"]);
        assert!(entries(list).is_empty());
        let q = get(&n, "q").expect("q");
        assert_eq!(
            Mark::of(q),
            Mark { line: 5, col: 6 },
            "a flow mapping starts at `{{`"
        );
        assert_eq!(from_node::<u32>(get(q, "z").expect("z")), Ok(2));
        assert_eq!(Mark::of(&n), Mark { line: 1, col: 1 });
    }

    #[test]
    fn render_and_display() {
        let e = err::<Config>("server:\n  bogus: 1\n");
        assert_eq!(e.to_string(), e.message);
        assert!(e
            .render("gw.yaml")
            .starts_with("gw.yaml:2:3: unknown field `bogus`"));
        assert_eq!(DeError::custom("x").render("f"), "f: x");
    }

    #[test]
    fn maps_flatten_and_untagged() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct F {
            name: String,
            #[serde(flatten)]
            rest: BTreeMap<String, Any>,
        }
        let f = de::<F>("name: n\nport: 80\n").expect("flatten");
        assert_eq!(f.rest["port"], Any::U(80));
        let m = de::<BTreeMap<u16, String>>("80: http\n443: https\n").expect("int keys");
        assert_eq!(m[&443], "https");
        let m = de::<BTreeMap<String, u8>>("1: 1\ntrue: 2\n~: 3\n").expect("text keys");
        assert_eq!(m.keys().collect::<Vec<_>>(), ["1", "true", "~"]);
        let e = err::<BTreeMap<String, Vec<u8>>>("a: [1]\nb: [1, x]\n");
        assert_eq!(e.mark, at(2, 8));
        #[derive(Deserialize, Debug, PartialEq)]
        #[serde(untagged)]
        enum U {
            N(u32),
            S { s: String },
        }
        assert_eq!(one::<U>("7"), Ok(U::N(7)));
        let e = one::<U>("\n  t: 1").expect_err("untagged");
        assert!(e.message.contains("did not match any variant"), "{e:?}");
        assert_eq!(e.mark, at(2, 3));
    }

    #[test]
    fn newtype_borrowed_and_ignored() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct Port(u16);
        #[derive(Deserialize, Debug)]
        struct B<'a> {
            s: &'a str,
            p: Port,
        }
        let n = parse("s: hi\np: 8080\nskip: {deep: [1, {x: y}]}\n").expect("parse");
        let b: B<'_> = from_node(&n).expect("borrowed");
        assert_eq!((b.s, b.p), ("hi", Port(8080)));
    }

    #[test]
    fn no_panics_on_odd_input() {
        let inputs = [
            "a: [",
            "a: {",
            "]",
            "}",
            ":",
            "- - -",
            "? a",
            "a:\n\t- b",
            "\u{feff}a: 1",
            "a: 'x\n",
            "a: |\n",
            "a: >-\n  x\n",
            "%YAML 1.2\n---\na: 1\n",
            "a: b: c",
            "a:\n- 1\n-",
            "a: [1, {b: [2, {c: ~}]}]",
            "...",
            "--- a",
            "a: *",
            "&",
            "!",
            "a: @",
            "a: `x`",
            "a: 0x",
            "a: -",
            "a: .",
            "a: 1e",
            "a: +",
            "\0",
            "a: \u{7f}",
        ];
        for t in inputs {
            if let Ok(n) = parse(t) {
                let _ = from_node::<Any>(&n);
                let _ = from_node::<Config>(&n);
                let _ = from_node::<BTreeMap<String, Mode>>(&n);
            }
        }
    }
}
