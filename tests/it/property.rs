//! Property tests: any single-byte change anywhere in an exported ledger is
//! detected by the verifier, and every well-formed ledger verifies.

use proptest::prelude::*;
use trailmark::ledger::verify::ChainVerifier;

use crate::vectors::vector_ledger;

fn verify_lines(
    lines: &[Vec<u8>],
    note: &str,
    key: &trailmark::ledger::VerifierKey,
) -> Result<(), String> {
    let mut verifier = ChainVerifier::new(key.clone(), true);
    for (seq, line) in lines.iter().enumerate() {
        verifier
            .push(seq as u64, None, line, None)
            .map_err(|e| e.to_string())?;
    }
    verifier
        .check_checkpoint_here(note, None)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn the_untouched_vector_ledger_verifies() {
    let v = vector_ledger();
    verify_lines(&v.lines, &v.note, &v.key.verifier()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_single_byte_change_to_any_entry_is_detected(entry in 0usize..7, position in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let v = vector_ledger();
        let mut lines = v.lines.clone();
        let at = position.index(lines[entry].len());
        lines[entry][at] ^= flip;
        prop_assert!(verify_lines(&lines, &v.note, &v.key.verifier()).is_err(), "a change to byte {} of entry {} went unnoticed", at, entry);
    }

    #[test]
    fn any_single_byte_change_to_the_checkpoint_is_detected(position in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let v = vector_ledger();
        let mut note = v.note.clone().into_bytes();
        let at = position.index(note.len());
        note[at] ^= flip;
        let note = String::from_utf8_lossy(&note).into_owned();
        prop_assert!(verify_lines(&v.lines, &note, &v.key.verifier()).is_err());
    }
}
