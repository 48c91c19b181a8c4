//! The published test vectors (RFC 9162 tree, RFC 8785 canonicalisation,
//! C2SP signed notes) and Trailmark's own ledger vectors in tests/vectors/.

use std::path::PathBuf;

use serde_json::{Map, Value, json};
use trailmark::ledger::entry::{Entry, Timestamp};
use trailmark::ledger::kind;
use trailmark::ledger::merkle::{self, Frontier, ProofPlan, all_nodes, leaf_hash};
use trailmark::ledger::{Actor, Checkpoint, Hash, LedgerKey, Seq, Subject, VerifierKey};

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn load(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(vectors().join(name)).unwrap()).unwrap()
}

fn hashes(list: &Value) -> Vec<Hash> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|h| Hash::parse_hex(h.as_str().unwrap()).unwrap())
        .collect()
}

#[test]
fn rfc9162_reference_tree_roots_and_proofs() {
    let v = load("rfc9162-merkle.json");
    let leaves: Vec<Hash> = v["leaves_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| leaf_hash(&hex::decode(l.as_str().unwrap()).unwrap()))
        .collect();
    let nodes = all_nodes(&leaves);
    for root in v["roots"].as_array().unwrap() {
        let size = root["size"].as_u64().unwrap() as usize;
        let expected = Hash::parse_hex(root["root_hex"].as_str().unwrap()).unwrap();
        assert_eq!(
            merkle::root_of(&leaves[..size]),
            expected,
            "root of size {size}"
        );
        let mut frontier = Frontier::default();
        leaves[..size].iter().for_each(|l| frontier.push(*l));
        assert_eq!(frontier.root(), expected, "frontier root of size {size}");
    }
    let mut checked = 0;
    for case in v["inclusion"].as_array().unwrap() {
        let (index, size) = (
            case["leaf_index"].as_u64().unwrap(),
            case["size"].as_u64().unwrap(),
        );
        let expected = hashes(&case["path_hex"]);
        let path = ProofPlan::inclusion(index, size)
            .unwrap()
            .assemble(&nodes)
            .unwrap();
        assert_eq!(path, expected, "inclusion of {index} in {size}");
        merkle::verify_inclusion(
            index,
            size,
            &leaves[index as usize],
            &expected,
            &merkle::root_of(&leaves[..size as usize]),
        )
        .unwrap();
        checked += 1;
    }
    for case in v["consistency"].as_array().unwrap() {
        let (m, n) = (
            case["size1"].as_u64().unwrap(),
            case["size2"].as_u64().unwrap(),
        );
        let expected = hashes(&case["proof_hex"]);
        let proof = ProofPlan::consistency(m, n)
            .unwrap()
            .assemble(&nodes)
            .unwrap();
        assert_eq!(proof, expected, "consistency {m} -> {n}");
        merkle::verify_consistency(
            m,
            n,
            &merkle::root_of(&leaves[..m as usize]),
            &merkle::root_of(&leaves[..n as usize]),
            &expected,
        )
        .unwrap();
        checked += 1;
    }
    assert!(checked >= 12, "the vector file holds the reference proofs");
}

#[test]
fn rfc8785_canonicalisation_examples() {
    let v = load("rfc8785-jcs.json");
    for case in v["cases"].as_array().unwrap() {
        let input: Value = serde_json::from_str(case["input"].as_str().unwrap()).unwrap();
        let out = serde_json_canonicalizer::to_string(&input).unwrap();
        assert_eq!(
            out,
            case["expected"].as_str().unwrap(),
            "case {}",
            case["name"]
        );
        assert!(trailmark::ledger::entry::is_canonical(out.as_bytes()));
    }
    for number in v["numbers"].as_array().unwrap() {
        let bits = u64::from_str_radix(number["ieee_hex"].as_str().unwrap(), 16).unwrap();
        let value = f64::from_bits(bits);
        match number["expected"].as_str() {
            Some(expected) => assert_eq!(
                serde_json_canonicalizer::to_string(&value).unwrap(),
                expected,
                "number {bits:016x}"
            ),
            None => assert!(
                !value.is_finite(),
                "only NaN and infinities have no canonical form"
            ),
        }
    }
}

#[test]
fn c2sp_signed_note_vector_from_the_go_reference() {
    let v = load("signed-note.json");
    let vkey = VerifierKey::parse(v["verifier_key"].as_str().unwrap()).unwrap();
    assert_eq!(vkey.to_text(), v["verifier_key"].as_str().unwrap());
    let signed = v["signed_note"].as_str().unwrap();
    assert_eq!(vkey.open(signed).unwrap(), v["text"].as_str().unwrap());
    // PRIVATE+KEY+name+keyid+base64(0x01 || seed): re-signing reproduces the exact bytes.
    let signer = v["signer_key"].as_str().unwrap();
    let seed_b64 = signer.splitn(5, '+').nth(4).unwrap();
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(seed_b64)
        .unwrap();
    let key = LedgerKey::from_seed(vkey.name(), &raw[1..].try_into().unwrap()).unwrap();
    assert_eq!(key.verifier().to_text(), vkey.to_text());
    assert_eq!(key.sign_note(v["text"].as_str().unwrap()), signed);
    let tampered = signed.replacen("cryptography", "cryptographi", 1);
    assert!(vkey.open(&tampered).is_err());
}

/// Trailmark's own ledger vectors: made by this code from a published test
/// key, frozen in tests/vectors/ledger/, reproduced byte for byte here.
pub struct VectorLedger {
    pub key: LedgerKey,
    pub lines: Vec<Vec<u8>>,
    pub hashes: Vec<Hash>,
    pub note: String,
}

/// (kind, actor, subject, payload, parent indexes, correlation ID, idempotency key)
type Spec<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Value,
    Vec<usize>,
    Option<&'a str>,
    Option<&'a str>,
);

pub fn vector_ledger() -> VectorLedger {
    let seed = *Hash::sha256(&[b"trailmark test vector key (never use elsewhere)"]).as_bytes();
    let key = LedgerKey::from_seed("vectors.trailmark.test/v1", &seed).unwrap();
    let obj = |v: Value| -> Map<String, Value> { v.as_object().unwrap().clone() };
    let specs: Vec<Spec> = vec![
        (
            "ledger.genesis",
            "system:trailmark",
            "ledger:vectors.trailmark.test/v1",
            json!({"origin": "vectors.trailmark.test/v1", "verifier_key": key.verifier().to_text(), "software": "trailmark 0.1.0"}),
            vec![],
            None,
            None,
        ),
        (
            "qms.document.revision_effective",
            "service:qms",
            "qms:sop/SOP-017@4",
            json!({"document": "SOP-017", "version": 4, "title": "Reinigung der Abfüllanlage – Zoë, Łukasz, 李雷", "window_days": 14, "ratio": 1.5e3}),
            vec![],
            Some("rev-SOP-017-4"),
            Some("qms-evt-88121"),
        ),
        (
            "lms.assignment.created",
            "service:lms",
            "lms:assignment/A-991",
            json!({"person_id": "E1042", "due_on": "2026-12-07"}),
            vec![1],
            Some("rev-SOP-017-4"),
            None,
        ),
        (
            "lms.completion.recorded",
            "service:lms",
            "person:E1042",
            json!({"score": 0.95, "verb": "completed", "big": 1e21, "small": 1e-7, "negative_zero": -0.0}),
            vec![2],
            None,
            Some("xapi-0001"),
        ),
        (
            "ledger.correction",
            "service:lms",
            "person:E1042",
            json!({"field": "score", "old": 0.95, "new": 0.92}),
            vec![3],
            None,
            None,
        ),
        (
            "qms.capa.opened",
            "service:qms",
            "qms:capa/CAPA-2026-014",
            json!({"title": "quote \" backslash \\ bell \u{7} tab \t emoji 🧪", "nested": {"b": [1, 2, {"z": null, "a": true}], "a": "é"}}),
            vec![],
            Some("CAPA-2026-014"),
            None,
        ),
        (
            "admin.config.changed",
            "user:E0007",
            "config:sequencer.batch_max_entries",
            json!({"old": 512, "new": 256}),
            vec![],
            None,
            None,
        ),
    ];
    let reasons = [
        None,
        None,
        None,
        None,
        Some("score transcribed from the wrong attempt"),
        None,
        Some("lower latency at the QA site"),
    ];
    let mut lines = Vec::new();
    let mut hashes: Vec<Hash> = Vec::new();
    let mut prev = Hash::ZERO;
    for (i, (kind_name, actor, subject, payload, parents, corr, idem)) in
        specs.into_iter().enumerate()
    {
        let entry = Entry {
            seq: Seq::new(i as u64).unwrap(),
            prev,
            recorded_at: Timestamp::parse(&format!(
                "2026-11-21T09:{:02}:00.{:06}Z",
                10 + i,
                1000 * i + 7
            ))
            .unwrap(),
            kind: kind::lookup(kind_name).unwrap(),
            actor: Actor::parse(actor).unwrap(),
            subject: Subject::parse(subject).unwrap(),
            correlation_id: corr.map(str::to_owned),
            idempotency_key: idem.map(str::to_owned),
            parents: parents.iter().map(|p| hashes[*p]).collect(),
            reason: reasons[i].map(str::to_owned),
            payload: obj(payload),
        };
        let (bytes, hash) = entry.seal();
        lines.push(bytes);
        hashes.push(hash);
        prev = hash;
    }
    let note = key.sign_note(
        &Checkpoint {
            origin: key.name().to_owned(),
            size: hashes.len() as u64,
            root: merkle::root_of(&hashes),
        }
        .body(),
    );
    VectorLedger {
        key,
        lines,
        hashes,
        note,
    }
}

#[test]
fn trailmark_ledger_vectors_are_reproduced_byte_for_byte_and_verify() {
    let v = vector_ledger();
    let dir = vectors().join("ledger");
    let mut jsonl = Vec::new();
    for line in &v.lines {
        jsonl.extend_from_slice(line);
        jsonl.push(b'\n');
    }
    let roots: String = (1..=v.hashes.len())
        .map(|n| format!("{n} {}\n", merkle::root_of(&v.hashes[..n])))
        .collect();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("entries.jsonl", jsonl),
        ("checkpoint", v.note.clone().into_bytes()),
        (
            "verifier-key",
            format!("{}\n", v.key.verifier().to_text()).into_bytes(),
        ),
        (
            "hashes.txt",
            v.hashes
                .iter()
                .map(|h| format!("{h}\n"))
                .collect::<String>()
                .into_bytes(),
        ),
        ("roots.txt", roots.into_bytes()),
        (
            "signer-seed.hex",
            format!("{}\n", hex::encode(v.key.seed())).into_bytes(),
        ),
    ];
    if std::env::var("TRAILMARK_WRITE_VECTORS").is_ok() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (name, bytes) in &files {
        let stored = std::fs::read(dir.join(name)).unwrap_or_else(|_| {
            panic!("tests/vectors/ledger/{name} is missing (TRAILMARK_WRITE_VECTORS=1 writes it)")
        });
        assert!(
            stored == *bytes,
            "tests/vectors/ledger/{name} differs from what the code produces"
        );
    }
    let report = trailmark::audit::verify_export(&dir, &v.key.verifier(), |_| {}).unwrap();
    assert_eq!(report.entries, v.lines.len() as u64);
}
