//! Converts arbitrary JSON (and arbitrary bytes as a buffer) through every `Value`
//! conversion and checks they agree with serde_json.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nonstick::protocol::value::Value;

fuzz_target!(|data: &[u8]| {
    let bin = Value::Array(vec![Value::from(data.to_vec()), Value::Null]);
    assert_eq!(Value::from_serialize(&bin).ok(), Some(bin.clone()));
    assert!(bin.to_json().is_none());
    let _ = bin.deserialize_into::<(Vec<u8>, ())>();
    let _ = bin.to_string();

    let Ok(val) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Some(json) = val.to_json() else {
        panic!("JSON text produced binary: {val:?}");
    };
    assert_eq!(
        val.to_string(),
        serde_json::to_string(&json).unwrap_or_default()
    );
    assert_eq!(Value::from(json.clone()), val);
    assert_eq!(Value::from_serialize(&val).ok().as_ref(), Some(&val));
    assert_eq!(val.deserialize_into::<serde_json::Value>().ok(), Some(json));
    let _ = val.deserialize_into::<Vec<String>>();
});
