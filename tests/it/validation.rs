//! Validation as code (docs/VALIDATION.md): the full OQ passes on a fresh
//! throw-away instance with every requirement traced and a signed, sealed
//! package; a changed configuration, removed append-only triggers and a
//! modified binary fail with deviations instead of passing.

use std::path::{Path, PathBuf};

use serde_json::Value;
use trailmark::validate::{self, OqOptions, Signer, iq, oq, protocol::ValidationSet};

use crate::harness::TestLedger;
use crate::people::{create_user, initial_password, own_password};

/// The `trailmark` executable the `cli` steps run.
fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_trailmark"))
}

/// A user with the given role who has replaced the one-time password, as
/// `trailmark user create` then `trailmark user password` do.
async fn signer(ledger: &TestLedger, id: &str, name: &str, role: &str) -> Signer {
    create_user(ledger, id, name, &[role]).await;
    let (user, current, new) = (id.to_owned(), initial_password(id), own_password(id, 1));
    ledger
        .opened
        .with_identity(|identity| async move {
            let login = identity.login(&user, &current).await?;
            let caller = identity.authenticate_session(&login.session.token).await?;
            identity.change_password(&caller, &current, &new).await?;
            identity.logout(&caller).await
        })
        .await
        .unwrap();
    Signer {
        user_id: id.into(),
        password: own_password(id, 1),
    }
}

fn results(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap()
}

#[tokio::test]
async fn full_oq_passes_on_a_throwaway_instance_every_requirement_traced_signed_and_sealed() {
    let ledger = TestLedger::new().await;
    let engineer = signer(&ledger, "val1", "Vera Validator", "validation_engineer").await;
    let reviewer = signer(&ledger, "qa1", "Quinn Reviewer", "qa_reviewer").await;
    let out = ledger.dir.path().join("oq");
    let options = OqOptions {
        target: None,
        only: Vec::new(),
        binary: binary(),
    };
    let run = validate::run_oq(&ledger.opened, &out, &options, Some(&engineer))
        .await
        .unwrap();
    let r = results(&out);
    assert_eq!(
        (run.verdict, run.complete, run.deviations),
        ("pass", true, 0),
        "deviations: {}",
        r["deviations"]
    );
    let set = ValidationSet::embedded().unwrap();
    assert_eq!(
        run.counts.0,
        set.cases().count(),
        "every case ran and passed"
    );
    // Every requirement not planned for a later release is traced to a
    // passing case; the matrix has a row for every requirement.
    let trace = r["traceability"].as_array().unwrap();
    assert_eq!(trace.len(), set.requirements.len());
    for row in trace {
        let planned = row["planned"].is_string();
        assert_eq!(
            row["result"],
            if planned { "planned" } else { "pass" },
            "{row}"
        );
    }
    // Evidence: every executed step has its file, with what was sent and
    // what was appended; no secret in any of it.
    for case in r["cases"].as_array().unwrap() {
        for step in case["steps"].as_array().unwrap() {
            let file = out.join(step["evidence"].as_str().unwrap());
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(!text.contains(&engineer.password), "{}", file.display());
            assert!(
                !text.contains("tmk_") && !text.contains("tms_"),
                "{}",
                file.display()
            );
        }
    }
    // The run and its `executed` signature are in the installation's
    // ledger; the package checks; a reviewer signs it afterwards.
    let report = validate::check(&ledger.opened, &out).await.unwrap();
    assert_eq!(report.seq, run.entry_seq);
    assert_eq!(report.signatures.len(), 1);
    assert!(report.signatures[0].contains("Vera Validator (val1), Executed"));
    let (after, _) = validate::sign(&ledger.opened, &out, "reviewed", &reviewer)
        .await
        .unwrap();
    assert!(after.signatures[1].contains("Quinn Reviewer (qa1), Reviewed"));
    // The PDF names the verdict and shows the executed signature.
    let pdf = std::fs::read(out.join("summary.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    // A file changed after sealing is found.
    let evidence = out.join("evidence/OQ-LED-01/01.json");
    let mut bytes = std::fs::read(&evidence).unwrap();
    bytes.push(b' ');
    std::fs::write(&evidence, bytes).unwrap();
    let err = validate::check(&ledger.opened, &out).await.unwrap_err();
    assert!(err.to_string().contains("OQ-LED-01/01.json"), "{err}");
    // The installation's ledger still verifies, signatures included.
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

#[tokio::test]
async fn a_changed_lockout_threshold_fails_iq_and_the_lockout_case_with_deviations() {
    let ledger = TestLedger::new().await;
    let mut config = ledger.config();
    config.identity.lockout_failures = 3;
    std::fs::write(
        ledger.data_dir().join("trailmark.toml"),
        toml::to_string(&config).unwrap(),
    )
    .unwrap();
    let opened = trailmark::instance::Instance::open(&ledger.data_dir(), None)
        .await
        .unwrap();

    let iq_out = ledger.dir.path().join("iq");
    let run = validate::run_iq(&opened, &iq_out, &binary(), &iq::Expected::default(), None)
        .await
        .unwrap();
    assert_eq!(run.verdict, "fail");
    let r = results(&iq_out);
    let config_check = &r["checks"].as_array().unwrap()[2];
    assert_eq!(config_check["id"], "IQ-03");
    assert_eq!(config_check["result"], "fail");
    assert!(
        config_check["observed"]
            .as_str()
            .unwrap()
            .contains("identity.lockout_failures = 3 (expected 5)"),
        "{config_check}"
    );
    assert!(
        r["deviations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["case"] == "IQ-03")
    );

    let oq_out = ledger.dir.path().join("oq");
    let options = OqOptions {
        target: None,
        only: vec!["OQ-ACC-03".into()],
        binary: binary(),
    };
    let run = validate::run_oq(&opened, &oq_out, &options, None)
        .await
        .unwrap();
    assert_eq!((run.verdict, run.complete), ("fail", false));
    let r = results(&oq_out);
    let deviation = &r["deviations"][0];
    assert_eq!(deviation["case"], "OQ-ACC-03");
    // The third wrong password (of the first four) locked the account; a
    // log-in answers a locked account as a wrong password, so the deviation
    // shows where the fifth should have locked it and nothing was locked.
    assert_eq!(deviation["step"], 3, "{deviation}");
    assert!(
        deviation["observed"]
            .as_str()
            .unwrap()
            .contains("no `security.account.locked` entry"),
        "{deviation}"
    );
    // The later steps of the failed case did not run; the package says so.
    let steps = r["cases"][0]["steps"].as_array().unwrap();
    assert!(steps[3..].iter().all(|s| s["result"] == "not-run"));
    opened.store.close().await;
    ledger.finish().await;
}

#[tokio::test]
async fn removed_append_only_triggers_fail_iq_and_the_tamper_case_with_deviations() {
    let ledger = TestLedger::new().await;
    let mut raw = ledger.db.raw().await;
    raw.drop_triggers().await;

    let iq_out = ledger.dir.path().join("iq");
    validate::run_iq(
        &ledger.opened,
        &iq_out,
        &binary(),
        &iq::Expected::default(),
        None,
    )
    .await
    .unwrap();
    let r = results(&iq_out);
    let guards = &r["checks"].as_array().unwrap()[5];
    assert_eq!(guards["id"], "IQ-06");
    assert_eq!(guards["result"], "fail", "{guards}");
    assert!(
        guards["observed"].as_str().unwrap().contains("entries_"),
        "{guards}"
    );

    // OQ's tamper case against this instance (the test owns it, so the
    // destructive steps may run on it, as on a throw-away instance built
    // from a binary whose migrations lack the triggers). As at a site, a
    // person administers it besides the OQ's fixture administrator, who can
    // then be retired (the last active administrator cannot be).
    create_user(&ledger, "siteadm", "Sita Admin", &["administrator"]).await;
    let server = ledger.start().await;
    let mut instance = oq::UnderTest::staged(&ledger.opened, &server.url())
        .await
        .unwrap();
    instance.throwaway = true;
    let set = ValidationSet::embedded().unwrap();
    let evidence = ledger.dir.path().join("oq/evidence");
    let runner = oq::Runner::new(&instance, binary(), evidence, "V-OQ-test".into());
    let (cases, deviations) = runner.run(&set, &["OQ-TAM-01".into()]).await;
    assert_eq!(cases[0].result, oq::Outcome::Fail);
    assert_eq!(deviations[0].case, "OQ-TAM-01");
    assert_eq!(deviations[0].step, 1);
    assert!(
        deviations[0].observed.contains("accepted the statement"),
        "{:?}",
        deviations[0]
    );
    drop(runner);
    // As a staged instance, the run retires its fixture credentials.
    instance.throwaway = false;
    let admin = instance.fixture["admin_id"].clone();
    instance.close().await;
    let status = ledger
        .opened
        .store
        .user(&trailmark::ledger::UserId::parse(&admin).unwrap())
        .await
        .unwrap()
        .expect("the fixture's administrator exists")
        .status;
    assert_eq!(status, "deactivated");
    server.stop().await;
    ledger.finish().await;
}

#[tokio::test]
async fn a_modified_binary_fails_iq_against_its_baseline() {
    let ledger = TestLedger::new().await;
    let copy = ledger.dir.path().join("trailmark-copy");
    std::fs::copy(binary(), &copy).unwrap();
    let baseline = ledger.dir.path().join("iq-baseline");
    validate::run_iq(
        &ledger.opened,
        &baseline,
        &copy,
        &iq::Expected::default(),
        None,
    )
    .await
    .unwrap();
    let expected = iq::Expected {
        baseline: Some(results(&baseline)),
        config: None,
    };
    // The same binary against its baseline: IQ-01 and IQ-03 pass.
    let same = ledger.dir.path().join("iq-same");
    validate::run_iq(&ledger.opened, &same, &copy, &expected, None)
        .await
        .unwrap();
    let r = results(&same);
    assert_eq!(r["checks"][0]["result"], "pass", "{}", r["checks"][0]);
    assert_eq!(r["checks"][2]["result"], "pass", "{}", r["checks"][2]);
    // One byte more: IQ-01 fails and shows both hashes.
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes.push(0);
    std::fs::write(&copy, bytes).unwrap();
    let changed = ledger.dir.path().join("iq-changed");
    validate::run_iq(&ledger.opened, &changed, &copy, &expected, None)
        .await
        .unwrap();
    let r = results(&changed);
    let software = &r["checks"][0];
    assert_eq!(software["result"], "fail", "{software}");
    let want = results(&baseline)["software"]["sha256"].clone();
    assert!(
        software["expected"]
            .as_str()
            .unwrap()
            .contains(want.as_str().unwrap())
    );
    assert_ne!(r["software"]["sha256"], want);
    assert!(
        r["deviations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["case"] == "IQ-01")
    );
    // An output directory that holds a package is never overwritten.
    let err = validate::run_iq(&ledger.opened, &changed, &copy, &expected, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    ledger.finish().await;
}
