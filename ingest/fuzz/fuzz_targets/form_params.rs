//! `twilio::parse_form` and `twilio::canonical_params` on arbitrary bytes: they never panic, accept
//! exactly the UTF-8 bodies, canonicalise independently of parameter order, and agree with re-encoding
//! (what `switchboard-ingest send` relies on when it signs the parameters it encodes).

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_ingest::verify::twilio::{Duplicates, canonical_params, parse_form};
use url::form_urlencoded;

fuzz_target!(|body: &[u8]| {
    let utf8 = std::str::from_utf8(body).is_ok();
    let Ok(params) = parse_form(body) else {
        assert!(!utf8, "a UTF-8 body must parse");
        return;
    };
    assert!(utf8, "a body that is not UTF-8 must be refused");

    let kept = canonical_params(&params, Duplicates::Keep);
    let collapsed = canonical_params(&params, Duplicates::Collapse);
    let total: usize = params.iter().map(|(name, value)| name.len() + value.len()).sum();
    assert_eq!(kept.len(), total, "every name and value is signed once");
    assert!(collapsed.len() <= kept.len());

    let mut reversed = params.clone();
    reversed.reverse();
    assert_eq!(canonical_params(&reversed, Duplicates::Keep), kept);
    assert_eq!(canonical_params(&reversed, Duplicates::Collapse), collapsed);

    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish();
    assert_eq!(parse_form(encoded.as_bytes()).as_ref(), Ok(&params));
});
