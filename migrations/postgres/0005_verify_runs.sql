-- Full verifications of the stored ledger (`trailmark verify`, the console's
-- "Verify now"). Operational records for the operations page, not ledger
-- entries: the ledger stays the evidence, this says when it was last checked
-- end to end and what was found. Rows are only inserted.
CREATE TABLE verify_runs (
    id          BIGSERIAL PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    by_whom     TEXT NOT NULL,      -- `cli` or `user:ID`
    result      TEXT NOT NULL,      -- intact | broken | error
    entries     BIGINT NOT NULL,
    checkpoints BIGINT NOT NULL,
    signatures  BIGINT NOT NULL,
    detail      TEXT NOT NULL       -- the root when intact, else what failed
);
