//! Request bodies read field by field: the one reader that makes every body exact.
//!
//! A [`Fields`] walks one JSON object. Each field a document type knows is read by name (its
//! type checked on its own, so one bad field does not hide the others); nested objects are
//! read by a nested [`Fields`]; whatever the type did not read is, when the object is
//! finished, reported as a field that does not belong there, at its full dotted path
//! (`tag_policy.range`). A body is therefore never stored with a part silently dropped, and
//! one 400 names every bad field.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::FieldError;

/// A document a request body must hold: an object read with [`Fields`].
pub trait Document: Sized {
    /// What the body should look like, for the message when it is not a JSON object at all
    /// (`{"name": "…", "scopes": ["…"]}`).
    const SHAPE: &'static str;

    /// Read the fields of the object; `None` when any field was bad (each is reported on
    /// `fields`).
    fn read(fields: &mut Fields<'_>) -> Option<Self>;
}

/// Why a body is not the document it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentError {
    /// Not a JSON object: the message says what the body should look like.
    NotAnObject(String),
    /// An object with bad fields, each named by its path.
    Invalid(Vec<FieldError>),
}

/// Read `value` as a `T`, reporting every bad field at once.
pub fn read_document<T: Document>(value: &Value) -> Result<T, DocumentError> {
    let Some(map) = value.as_object() else {
        return Err(DocumentError::NotAnObject(format!(
            "The body must be a JSON object, such as {}.",
            T::SHAPE
        )));
    };
    let mut fields = Fields::new(map, "");
    let read = T::read(&mut fields);
    let errors = fields.finish();
    match read {
        Some(document) if errors.is_empty() => Ok(document),
        _ => Err(DocumentError::Invalid(errors)),
    }
}

/// One JSON object being read. Reading a field marks it known; [`Fields::finish`] reports the
/// others.
pub struct Fields<'v> {
    map: &'v Map<String, Value>,
    /// The object's own path (`""` at the top, `git_repository`, `items[2]`).
    path: String,
    read: Vec<&'v str>,
    /// The names asked for that the object lacks: what a field nobody read is compared with,
    /// to suggest the one meant.
    missing: Vec<String>,
    errors: Vec<FieldError>,
}

impl<'v> Fields<'v> {
    pub fn new(map: &'v Map<String, Value>, path: &str) -> Self {
        Self {
            map,
            path: path.to_owned(),
            read: Vec::new(),
            missing: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// The full path of a field of this object.
    pub fn path_of(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// Report a problem with field `name` of this object.
    pub fn error(&mut self, name: &str, message: impl Into<String>) {
        let field = self.path_of(name);
        self.errors.push(FieldError::new(field, message));
    }

    /// Whether any problem was reported under `name` (the field or anything inside it).
    pub fn has_error(&self, name: &str) -> bool {
        let field = self.path_of(name);
        self.errors.iter().any(|e| {
            e.field == field || e.field.starts_with(&format!("{field}.")) || e.field.starts_with(&format!("{field}["))
        })
    }

    /// Whether any problem was reported on this object so far.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The raw value of `name`, marking it known; `None` when absent.
    pub fn value(&mut self, name: &str) -> Option<&'v Value> {
        let Some((key, value)) = self.map.get_key_value(name) else {
            self.missing.push(name.to_owned());
            return None;
        };
        if !self.read.contains(&key.as_str()) {
            self.read.push(key.as_str());
        }
        Some(value)
    }

    /// Whether `name` is present and not `null` (without marking it known).
    pub fn is_given(&self, name: &str) -> bool {
        self.map.get(name).is_some_and(|v| !v.is_null())
    }

    /// Accept `name` and ignore it (a server-set field sent back in a round trip).
    pub fn ignore(&mut self, name: &str) {
        let _ = self.value(name);
    }

    /// A field that must be present and not `null`.
    pub fn required<T: DeserializeOwned>(&mut self, name: &str) -> Option<T> {
        match self.value(name) {
            None | Some(Value::Null) => {
                self.error(name, "is required");
                None
            }
            Some(value) => self.typed(name, value),
        }
    }

    /// A field that may be absent or `null` (both `None`).
    pub fn optional<T: DeserializeOwned>(&mut self, name: &str) -> Option<T> {
        match self.value(name) {
            None | Some(Value::Null) => None,
            Some(value) => self.typed(name, value),
        }
    }

    /// A nested object, read by `read`; absent or `null` is `Ok(None)`. `Err(())` when it was
    /// given but bad (its problems are reported).
    #[allow(clippy::result_unit_err)]
    pub fn object<T>(&mut self, name: &str, read: impl FnOnce(&mut Fields<'v>) -> Option<T>) -> Result<Option<T>, ()> {
        match self.value(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => {
                let mut nested = Fields::new(map, &self.path_of(name));
                let result = read(&mut nested);
                let errors = nested.finish();
                let ok = errors.is_empty();
                self.errors.extend(errors);
                match result {
                    Some(value) if ok => Ok(Some(value)),
                    _ => Err(()),
                }
            }
            Some(_) => {
                self.error(name, "must be an object");
                Err(())
            }
        }
    }

    /// An array of objects, each read by `read`; absent or `null` is `Ok(None)`. At most `max`
    /// items.
    #[allow(clippy::result_unit_err)]
    pub fn objects<T>(
        &mut self,
        name: &str,
        max: usize,
        mut read: impl FnMut(&mut Fields<'v>) -> Option<T>,
    ) -> Result<Option<Vec<T>>, ()> {
        let items = match self.value(name) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(_) => {
                self.error(name, "must be an array");
                return Err(());
            }
        };
        if items.len() > max {
            self.error(name, format!("must hold at most {max} items"));
            return Err(());
        }
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{i}]", self.path_of(name));
            let Some(map) = item.as_object() else {
                self.errors.push(FieldError::new(path, "must be an object"));
                ok = false;
                continue;
            };
            let mut nested = Fields::new(map, &path);
            let result = read(&mut nested);
            let errors = nested.finish();
            ok &= errors.is_empty();
            self.errors.extend(errors);
            match result {
                Some(value) => out.push(value),
                None => ok = false,
            }
        }
        if ok { Ok(Some(out)) } else { Err(()) }
    }

    /// Deserialize one value; a type error is reported at the field's path.
    fn typed<T: DeserializeOwned>(&mut self, name: &str, value: &Value) -> Option<T> {
        // A name (an enum) is a string: serde also reads `{"WEBHOOK": null}` as one, which a
        // body must not be; and says a value of another type should be a "string or map".
        if !value.is_string()
            && let Some(names) = enum_names::<T>()
        {
            self.errors.push(FieldError::new(self.path_of(name), names));
            return None;
        }
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(err) => {
                let inner = err.path().to_string();
                let base = self.path_of(name);
                let path = if inner == "." || inner.is_empty() {
                    base
                } else if inner.starts_with('[') {
                    format!("{base}{inner}")
                } else {
                    format!("{base}.{inner}")
                };
                self.errors.push(FieldError::new(path, type_message(&err.into_inner())));
                None
            }
        }
    }

    /// The problems found, plus one per field of the object that nothing read.
    pub fn finish(mut self) -> Vec<FieldError> {
        for key in self.map.keys() {
            if !self.read.contains(&key.as_str()) {
                let field = self.path_of(&shown_key(key));
                // Among every name asked for: a PATCH's misspelt key meets the stored document,
                // which has the field meant.
                let asked = self.missing.iter().map(String::as_str).chain(self.read.iter().copied());
                let message = match meant(key, asked) {
                    Some(name) => format!("is not a known field here; perhaps `{name}`"),
                    None => "is not a known field here".to_owned(),
                };
                self.errors.push(FieldError::new(field, message));
            }
        }
        // A field is named once, with its first problem.
        let mut seen = std::collections::HashSet::new();
        self.errors.retain(|e| seen.insert(e.field.clone()));
        self.errors
    }
}

/// The field a client most likely meant by `key`, among the names asked for: the same
/// letters in another case or with other separators (`autoDeploy`, `auto-deploy`, `autodeploy`
/// for `auto_deploy`), or a typo or two in a longer name (`brnach`).
fn meant<'n>(key: &str, asked: impl Iterator<Item = &'n str>) -> Option<&'n str> {
    // A long key is no typo, and comparing it would cost time in its length.
    if key.len() > 64 {
        return None;
    }
    let squashed = |name: &str| -> String {
        name.chars()
            .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let key = squashed(key);
    asked
        .map(|name| (name, strsim::osa_distance(&key, &squashed(name))))
        .filter(|&(name, distance)| distance == 0 || (distance <= 2 && distance * 3 <= name.len()))
        .min_by_key(|&(_, distance)| distance)
        .map(|(name, _)| name)
}

/// A field name the client sent, as an error names it: control characters escaped (`\u{0}`)
/// and at most 100 characters, so that a stray key cannot garble or swell the answer.
fn shown_key(key: &str) -> String {
    const MAX: usize = 100;
    let mut shown: String = key
        .chars()
        .take(MAX)
        .flat_map(|c| {
            let escaped = c.is_control().then(|| c.escape_unicode().to_string());
            escaped.unwrap_or_else(|| c.to_string()).chars().collect::<Vec<_>>()
        })
        .collect();
    if key.chars().nth(MAX).is_some() {
        shown.push('…');
    }
    shown
}

/// "must be one of A, B, C" when `T` is an enum of names, else `None`: a string that is none of
/// its names makes serde list them.
fn enum_names<T: DeserializeOwned>() -> Option<String> {
    let err = serde_json::from_value::<T>(Value::String(String::new())).err()?;
    err.to_string()
        .starts_with("unknown variant")
        .then(|| type_message(&err))
}

/// What a value of the wrong type should have been, from serde's message, without ever
/// repeating the value itself (it may be a secret sent in the wrong field).
fn type_message(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let text = text.split(" at line ").next().unwrap_or(&text);
    if let Some((_, expected)) = text.split_once(", expected one of ") {
        format!("must be one of {}", expected.replace('`', ""))
    } else if let Some((_, names)) = text.split_once(", expected `") {
        // Two names: "`A` or `B`".
        format!("must be {names}").replace('`', "")
    } else if let Some((_, expected)) = text.split_once(", expected ") {
        format!("must be {}", in_json_terms(expected))
    } else {
        "has the wrong type".to_owned()
    }
}

/// What serde expects, said in JSON's words rather than Rust's (`i64`, `a sequence`).
fn in_json_terms(expected: &str) -> &str {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" | "u64" | "u128" | "usize" => "a whole number, 0 or more",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a sequence" => "an array",
        "a map" => "an object",
        "a borrowed string" => "a string",
        other if other.starts_with("struct ") => "an object",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, PartialEq)]
    struct Inner {
        a: u32,
    }

    #[derive(Debug, PartialEq)]
    struct Outer {
        name: String,
        inner: Option<Inner>,
        items: Vec<Inner>,
    }

    fn inner(f: &mut Fields<'_>) -> Option<Inner> {
        Some(Inner { a: f.required("a")? })
    }

    impl Document for Outer {
        const SHAPE: &'static str = "{\"name\": \"…\"}";
        fn read(f: &mut Fields<'_>) -> Option<Self> {
            let name = f.required("name");
            let nested = f.object("inner", inner);
            let items = f.objects("items", 3, inner);
            Some(Outer {
                name: name?,
                inner: nested.ok()?,
                items: items.ok()?.unwrap_or_default(),
            })
        }
    }

    #[test]
    fn unknown_field_names_are_shown_escaped_and_bounded() {
        let long = "k".repeat(500);
        let mut found = fields(json!({"name": "x", "a\u{0}b\n": 1, (long.clone()): 2}));
        found.sort();
        assert_eq!(found, vec!["a\\u{0}b\\u{a}".to_owned(), format!("{}…", &long[..100])]);
    }

    #[test]
    fn a_misspelt_field_suggests_the_one_meant() {
        let messages = |value: Value| match read_document::<Outer>(&value) {
            Err(DocumentError::Invalid(errors)) => errors.into_iter().map(|e| (e.field, e.message)).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let unknown = |field: &str, meant: Option<&str>| {
            let message = match meant {
                Some(name) => format!("is not a known field here; perhaps `{name}`"),
                None => "is not a known field here".to_owned(),
            };
            (field.to_owned(), message)
        };
        // Another case or separator, or a typo: the name left out is suggested.
        for key in ["Name", "NAME", "na-me", "nmae", "nam"] {
            assert_eq!(
                messages(json!({(key): "x"}))[1..],
                [unknown(key, Some("name"))],
                "{key}"
            );
        }
        assert_eq!(
            messages(json!({"name": "x", "inner": {"A": 1}})),
            [
                ("inner.a".to_owned(), "is required".to_owned()),
                unknown("inner.A", Some("a"))
            ]
        );
        // A name given too (as a PATCH merges the key into the stored document), but not
        // one too far from the key.
        assert_eq!(
            messages(json!({"name": "x", "Name": "y"})),
            [unknown("Name", Some("name"))]
        );
        assert_eq!(messages(json!({"name": "x", "zzz": 1})), [unknown("zzz", None)]);
        let long = "n".repeat(65);
        assert_eq!(
            messages(json!({"name": "x", (long.clone()): 1})),
            [unknown(&long, None)]
        );
    }

    fn fields(value: Value) -> Vec<String> {
        match read_document::<Outer>(&value) {
            Err(DocumentError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_a_valid_document() {
        let doc = read_document::<Outer>(&json!({"name": "x", "inner": {"a": 1}, "items": [{"a": 2}]})).unwrap();
        assert_eq!(doc.inner, Some(Inner { a: 1 }));
        assert_eq!(doc.items, vec![Inner { a: 2 }]);
    }

    #[test]
    fn a_foreign_field_is_named_at_every_depth() {
        assert_eq!(fields(json!({"name": "x", "z": 1})), vec!["z"]);
        assert_eq!(fields(json!({"name": "x", "inner": {"a": 1, "z": 1}})), vec!["inner.z"]);
        assert_eq!(
            fields(json!({"name": "x", "items": [{"a": 1}, {"a": 1, "z": 1}]})),
            vec!["items[1].z"]
        );
    }

    /// Messages say what JSON to send, not Rust's type names, and never repeat the value.
    #[test]
    fn a_wrong_type_is_named_in_json_terms() {
        let messages = |value: Value| match read_document::<Outer>(&value) {
            Err(DocumentError::Invalid(errors)) => errors.into_iter().map(|e| (e.field, e.message)).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let got = messages(json!({"name": true, "inner": {"a": "secret-1"}, "items": {"a": 1.5}}));
        assert_eq!(
            got,
            [
                ("name".to_owned(), "must be a string".to_owned()),
                ("inner.a".to_owned(), "must be a whole number, 0 or more".to_owned()),
                ("items".to_owned(), "must be an array".to_owned()),
            ]
        );
        assert_eq!(
            messages(json!({"name": "x", "inner": -1})),
            [("inner".to_owned(), "must be an object".to_owned())]
        );
        let wrong = |value: Value| {
            let err = serde_json::from_value::<u32>(value).expect_err("not a u32");
            type_message(&err)
        };
        assert_eq!(wrong(json!(-1)), "must be a whole number, 0 or more");
        assert_eq!(wrong(json!("7")), "must be a whole number, 0 or more");
        let err = serde_json::from_value::<Vec<bool>>(json!([1])).expect_err("not booleans");
        assert_eq!(type_message(&err), "must be true or false");
        let err = serde_json::from_value::<i64>(json!(1.5)).expect_err("not whole");
        assert_eq!(type_message(&err), "must be a whole number");
    }

    /// An enum given as another JSON type than a string is refused with its names, not
    /// serde's "string or map"; one given as serde's `{"Name": null}` too.
    #[test]
    fn an_enum_of_the_wrong_type_lists_its_names() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        enum Kind {
            Webhook,
            Qovery,
            GithubActions,
        }
        for value in [
            json!(["Webhook"]),
            json!(5),
            json!(true),
            json!({"a": 1}),
            json!({}),
            json!({"Webhook": null}),
            json!({"Webhook": 1}),
            json!("WEBHOOK"),
        ] {
            let doc = json!({ "type": value });
            let mut fields = Fields::new(doc.as_object().unwrap(), "");
            assert!(fields.required::<Kind>("type").is_none());
            let errors = fields.finish();
            assert_eq!(errors.len(), 1, "{value}");
            assert_eq!(errors[0].field, "type");
            assert_eq!(
                errors[0].message, "must be one of Webhook, Qovery, GithubActions",
                "{value}"
            );
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        enum Two {
            On,
            Off,
        }
        let doc = json!({ "state": 1 });
        let mut fields = Fields::new(doc.as_object().unwrap(), "");
        assert!(fields.required::<Two>("state").is_none());
        assert_eq!(fields.finish()[0].message, "must be On or Off");
    }

    #[test]
    fn every_bad_field_is_named_once() {
        let mut got = fields(json!({"name": 5, "inner": {"a": "x"}, "items": [1, {"a": -1}]}));
        got.sort();
        assert_eq!(got, vec!["inner.a", "items[0]", "items[1].a", "name"]);
        assert_eq!(fields(json!({"inner": []})), vec!["name", "inner"]);
        assert_eq!(fields(json!({"name": "x", "items": [{}, {}, {}, {}]})), vec!["items"]);
    }

    #[test]
    fn a_wrong_value_is_never_repeated() {
        let Err(DocumentError::Invalid(errors)) =
            read_document::<Outer>(&json!({"name": "x", "inner": {"a": "hunter2-secret"}}))
        else {
            panic!("accepted")
        };
        assert_eq!(errors[0].field, "inner.a");
        assert!(!errors[0].message.contains("hunter2"), "{}", errors[0].message);
        assert!(errors[0].message.starts_with("must be"), "{}", errors[0].message);
    }

    #[test]
    fn not_an_object() {
        assert!(matches!(
            read_document::<Outer>(&json!([1])),
            Err(DocumentError::NotAnObject(m)) if m.contains("{\"name\"")
        ));
    }
}

/// The path (`name`, `git_repository.branch`, `deployment_restrictions[0].value`) of the first
/// key given twice in one object of `json`, of which a parsed `Value` silently keeps the last:
/// a body with a part dropped. `None` when every object's keys are distinct, or when `json` is
/// not JSON at all (its parse says why).
pub fn repeated_key(json: &[u8]) -> Option<String> {
    let found = RefCell::new(None);
    let walk = KeyWalk {
        path: String::new(),
        found: &found,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    // The walk stops at the repeated key with an error; `found` says which.
    let _ = walk.deserialize(&mut deserializer);
    found.into_inner()
}

/// One value of [`repeated_key`]'s walk, at `path`.
struct KeyWalk<'f> {
    path: String,
    found: &'f RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for KeyWalk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyWalk<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            let item = KeyWalk {
                path: format!("{}[{index}]", self.path),
                found: self.found,
            };
            if seq.next_element_seed(item)?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if !seen.insert(key) {
                *self.found.borrow_mut() = Some(path);
                return Err(de::Error::custom("a key is given twice"));
            }
            map.next_value_seed(KeyWalk {
                path,
                found: self.found,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod repeated_key_tests {
    use super::repeated_key;

    #[test]
    fn keys_given_twice_are_named_by_their_path() {
        assert_eq!(repeated_key(br#"{"a": 1, "b": [1, {"c": 2}]}"#), None);
        assert_eq!(repeated_key(br#"{"a": 1, "a": 2}"#).as_deref(), Some("a"));
        assert_eq!(
            repeated_key(br#"{"git_repository": {"branch": "a", "url": "u", "branch": "b"}}"#).as_deref(),
            Some("git_repository.branch")
        );
        assert_eq!(
            repeated_key(br#"{"list": [{"x": 1}, {"value": 1, "value": 1}]}"#).as_deref(),
            Some("list[1].value")
        );
        // The same key in two objects is no repeat; an escaped spelling is the same key.
        assert_eq!(repeated_key(br#"[{"a": 1}, {"a": 2}]"#), None);
        assert_eq!(repeated_key(br#"{"a": 1, "\u0061": 2}"#).as_deref(), Some("a"));
        assert_eq!(repeated_key(b"not json"), None);
    }
}
