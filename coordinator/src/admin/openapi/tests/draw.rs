//! For the tests: values drawn from the document's schemas, as a schema-based fuzzer draws
//! them (allowed ones, and ones just outside each constraint), and a small validator of
//! answers against the document's response schemas.

use regex_syntax::hir::{Class, Hir, HirKind};
use serde_json::{json, Map, Value};

/// A seeded xorshift64* generator: the tests are repeatable.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `0..n` (0 for 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    /// `lo..=hi`.
    pub fn between(&mut self, lo: i128, hi: i128) -> i128 {
        let span = (hi - lo + 1) as u128;
        lo + (u128::from(self.next()) % span) as i128
    }

    /// True once in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A string that `pattern` matches (its anchors draw nothing).
pub fn from_regex(pattern: &str, rng: &mut Rng) -> String {
    let hir = regex_syntax::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
    let mut out = String::new();
    walk(&hir, rng, &mut out);
    out
}

fn walk(hir: &Hir, rng: &mut Rng, out: &mut String) {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(lit) => out.push_str(&String::from_utf8_lossy(&lit.0)),
        HirKind::Class(Class::Unicode(c)) => {
            let sizes: Vec<u64> = c
                .ranges()
                .iter()
                .map(|r| u64::from(r.end()) - u64::from(r.start()) + 1)
                .collect();
            let mut k = rng.below(sizes.iter().sum());
            for (r, n) in c.ranges().iter().zip(sizes) {
                if k < n {
                    out.push(char::from_u32(u32::from(r.start()) + k as u32).unwrap_or('a'));
                    return;
                }
                k -= n;
            }
        }
        HirKind::Class(Class::Bytes(c)) => {
            let r = rng.pick(c.ranges());
            let b = rng.between(i128::from(r.start()), i128::from(r.end())) as u8;
            out.push(char::from(b));
        }
        HirKind::Repetition(rep) => {
            let max = rep.max.unwrap_or(rep.min + 8);
            for _ in 0..rng.between(i128::from(rep.min), i128::from(max)) {
                walk(&rep.sub, rng, out);
            }
        }
        HirKind::Capture(c) => walk(&c.sub, rng, out),
        HirKind::Concat(parts) => parts.iter().for_each(|h| walk(h, rng, out)),
        HirKind::Alternation(alts) => walk(rng.pick(alts), rng, out),
    }
}

/// `schema` itself, or what its `$ref` names in `doc`.
pub fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// The types `schema` allows (`type` as a string or a list).
fn types(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Characters of strings drawn without a pattern: ASCII of every class, and some that are
/// several bytes in UTF-8.
const ALPHABET: &[char] = &[
    'a', 'z', 'A', 'Z', '0', '9', '-', '_', '.', '~', '+', '/', '=', ' ', '!', '%', ':', '[', ']',
    '@', '\'', '"', '\\', '\t', 'é', 'ß', '字', '😀',
];

/// The integer bounds of `schema`: its own, else those of its format (as utoipa writes
/// them, a Rust `u16` is an `int32` with only a minimum).
fn int_bounds(schema: &Value) -> (i128, i128) {
    let (lo, hi) = match schema["format"].as_str() {
        Some("int32") => (i128::from(i32::MIN), i128::from(i32::MAX)),
        _ => (i128::from(i64::MIN), i128::from(i64::MAX)),
    };
    (
        schema["minimum"].as_i64().map_or(lo, i128::from),
        schema["maximum"].as_u64().map_or(hi, i128::from),
    )
}

/// A value `schema` allows, as a schema-based fuzzer draws it: bounds and lengths at their
/// edges as often as inside.
pub fn allowed(doc: &Value, schema: &Value, rng: &mut Rng) -> Value {
    let schema = resolve(doc, schema);
    if let Some(values) = schema["enum"].as_array() {
        return rng.pick(values).clone();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = schema[key].as_array() {
            return allowed(doc, rng.pick(alts), rng);
        }
    }
    let types = types(schema);
    let non_null: Vec<&str> = types.iter().copied().filter(|t| *t != "null").collect();
    if non_null.is_empty() || (types.contains(&"null") && rng.one_in(8)) {
        return Value::Null;
    }
    match *rng.pick(&non_null) {
        "string" => Value::String(allowed_string(schema, rng)),
        "integer" => {
            let (lo, hi) = int_bounds(schema);
            let n = match rng.below(4) {
                0 => lo,
                1 => hi,
                _ => rng.between(lo, hi),
            };
            json!(n as i64)
        }
        "boolean" => json!(rng.one_in(2)),
        "array" => {
            let n = rng.below(3);
            Value::Array(
                (0..n)
                    .map(|_| allowed(doc, &schema["items"], rng))
                    .collect(),
            )
        }
        "object" => {
            let required: Vec<&str> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut out = Map::new();
            for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
                if required.contains(&name.as_str()) || rng.one_in(2) {
                    out.insert(name.clone(), allowed(doc, prop, rng));
                }
            }
            Value::Object(out)
        }
        other => panic!("no generator for type {other}"),
    }
}

fn lengths(schema: &Value) -> (usize, Option<usize>) {
    (
        schema["minLength"].as_u64().unwrap_or(0) as usize,
        schema["maxLength"].as_u64().map(|n| n as usize),
    )
}

fn allowed_string(schema: &Value, rng: &mut Rng) -> String {
    let (min, max) = lengths(schema);
    if let Some(pattern) = schema["pattern"].as_str() {
        for _ in 0..1000 {
            let s = from_regex(pattern, rng);
            let n = s.chars().count();
            if n >= min && max.is_none_or(|m| n <= m) {
                return s;
            }
        }
        panic!("pattern {pattern:.60} draws nothing of lengths {min}..={max:?}");
    }
    let top = max.unwrap_or(min + 40);
    let n = match rng.below(3) {
        0 => min,
        1 => top,
        _ => rng.between(min as i128, top as i128) as usize,
    };
    (0..n).map(|_| *rng.pick(ALPHABET)).collect()
}

/// Values just outside what `schema` allows, one constraint at a time: past each bound
/// and length, a character no pattern takes, a value no enum lists.
pub fn forbidden(doc: &Value, schema: &Value, rng: &mut Rng) -> Vec<Value> {
    let schema = resolve(doc, schema);
    let mut out = Vec::new();
    if types(schema).contains(&"integer") {
        if let Some(min) = schema["minimum"].as_i64() {
            out.push(json!(min - 1));
        }
        if let Some(max) = schema["maximum"].as_i64() {
            out.push(json!(max + 1));
        }
    }
    if types(schema).contains(&"string") {
        if schema["enum"].is_array() {
            out.push(json!("nope"));
        }
        let (min, max) = lengths(schema);
        if min > 0 {
            out.push(json!(""));
        }
        if let Some(max) = max {
            out.push(json!("a".repeat(max + 1)));
        }
        if schema["pattern"].is_string() {
            let s = allowed_string(schema, rng);
            out.push(json!(format!("{s}!")));
            out.push(json!(format!("!{s}")));
        }
    }
    out
}

/// Whether `value` is what `schema` describes: types, required and (when closed) only the
/// listed properties, items, patterns, lengths, bounds and enums.
pub fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(values) = schema["enum"].as_array() {
        if !values.contains(value) {
            return Err(format!("{at}: {value} is not one of {values:?}"));
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = schema[key].as_array() {
            return if alts.iter().any(|s| conforms(doc, s, value, at).is_ok()) {
                Ok(())
            } else {
                Err(format!("{at}: {value} matches no alternative"))
            };
        }
    }
    let types = types(schema);
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if !types.is_empty() && !types.contains(&kind) {
        return Err(format!("{at}: {kind} where the schema says {types:?}"));
    }
    match value {
        Value::String(s) => {
            let (min, max) = lengths(schema);
            let n = s.chars().count();
            if n < min || max.is_some_and(|m| n > m) {
                return Err(format!("{at}: {s:?} is not {min}..={max:?} characters"));
            }
            if let Some(p) = schema["pattern"].as_str() {
                if !regex::Regex::new(p).map_err(|e| e.to_string())?.is_match(s) {
                    return Err(format!("{at}: {s:?} does not match {p:.60}"));
                }
            }
        }
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or_default();
            if schema["minimum"].as_f64().is_some_and(|m| n < m)
                || schema["maximum"].as_f64().is_some_and(|m| n > m)
            {
                return Err(format!("{at}: {n} out of bounds"));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                conforms(doc, &schema["items"], item, &format!("{at}/{i}"))?;
            }
        }
        Value::Object(fields) => {
            let props = schema["properties"].as_object();
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap_or_default();
                if !fields.contains_key(r) {
                    return Err(format!("{at}: no {r}"));
                }
            }
            for (k, v) in fields {
                match props.and_then(|p| p.get(k)) {
                    Some(prop) => conforms(doc, prop, v, &format!("{at}/{k}"))?,
                    None if schema["additionalProperties"] == false => {
                        return Err(format!("{at}: unexpected field {k}"))
                    }
                    None => {}
                }
            }
        }
        _ => {}
    }
    Ok(())
}
