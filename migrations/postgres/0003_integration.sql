-- The integration tables (docs/INTEGRATION.md): the inbox of events, the
-- bitemporal master data, assignments, completions, CAPA actions and the
-- outbox. Every row is written as state of the ledger entry named by its
-- *_seq column, in that entry's transaction. Times are RFC 3339 UTC with
-- six fractional digits, so text order is time order.

CREATE TABLE inbox (
    event_key      TEXT PRIMARY KEY,       -- hex SHA-256(source || '\n' || id)
    source         TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    type           TEXT NOT NULL,          -- as sent
    kind           TEXT NOT NULL,          -- recorded as
    event_time     TEXT,
    seq            BIGINT NOT NULL,
    entry_hash     BYTEA NOT NULL,
    received_at    TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    status         TEXT NOT NULL,          -- pending | applied | parked | rejected
    status_seq     BIGINT,
    detail         TEXT
);
CREATE INDEX inbox_status ON inbox (status, seq);
CREATE INDEX inbox_source_time ON inbox (source, event_time);

CREATE TABLE people (
    person_id   TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    active      BIGINT NOT NULL,
    source_time TEXT NOT NULL,
    known_seq   BIGINT NOT NULL
);

CREATE TABLE person_functions (
    person_id      TEXT NOT NULL,
    job_function   TEXT NOT NULL,
    valid_from     TEXT NOT NULL,
    valid_to       TEXT,
    known_seq      BIGINT NOT NULL,
    known_at       TEXT NOT NULL,
    superseded_seq BIGINT,
    superseded_at  TEXT
);
CREATE INDEX person_functions_person ON person_functions (person_id);
CREATE INDEX person_functions_function ON person_functions (job_function);

CREATE TABLE job_functions (
    job_function TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    active       BIGINT NOT NULL,
    known_seq    BIGINT NOT NULL
);

CREATE TABLE training_categories (
    category    TEXT PRIMARY KEY,
    window_days BIGINT NOT NULL,
    known_seq   BIGINT NOT NULL
);

CREATE TABLE training_matrix (
    document_id    TEXT NOT NULL,
    job_function   TEXT NOT NULL,
    known_seq      BIGINT NOT NULL,
    known_at       TEXT NOT NULL,
    superseded_seq BIGINT,
    superseded_at  TEXT
);
CREATE INDEX training_matrix_document ON training_matrix (document_id);
CREATE INDEX training_matrix_function ON training_matrix (job_function);

CREATE TABLE document_versions (
    document_id  TEXT NOT NULL,
    version      TEXT NOT NULL,
    effective_at TEXT NOT NULL,
    retired_at   TEXT,
    category     TEXT,
    title        TEXT,
    known_seq    BIGINT NOT NULL,
    known_at     TEXT NOT NULL,
    entry_hash   BYTEA NOT NULL,
    retired_seq  BIGINT,
    PRIMARY KEY (document_id, version)
);

CREATE TABLE assignments (
    assignment_id         TEXT PRIMARY KEY,
    person_id             TEXT NOT NULL,
    document_id           TEXT NOT NULL,
    version               TEXT NOT NULL,
    origin                TEXT NOT NULL,   -- sop | capa:{capa_id}/{action_id}
    capa_id               TEXT,
    action_id             TEXT,
    verification_required BIGINT NOT NULL,
    effective_at          TEXT NOT NULL,
    due_at                TEXT NOT NULL,
    created_seq           BIGINT NOT NULL,
    created_at            TEXT NOT NULL,
    entry_hash            BYTEA NOT NULL,
    status                TEXT NOT NULL,   -- open | completed | cancelled
    completed_at          TEXT,
    completion_seq        BIGINT,
    completion_hash       BYTEA,
    verified              BIGINT NOT NULL DEFAULT 0,
    closed_seq            BIGINT,
    cancel_reason         TEXT
);
CREATE INDEX assignments_person ON assignments (person_id, document_id, version);
CREATE INDEX assignments_document ON assignments (document_id, version);
CREATE INDEX assignments_capa ON assignments (capa_id);

CREATE TABLE completions (
    seq          BIGINT PRIMARY KEY,      -- the lms.completion.recorded entry
    person_id    TEXT NOT NULL,
    document_id  TEXT NOT NULL,
    version      TEXT NOT NULL,
    completed_at TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    verified_by  TEXT,
    entry_hash   BYTEA NOT NULL
);
CREATE INDEX completions_person ON completions (person_id, document_id, version);

CREATE TABLE capa_actions (
    capa_id               TEXT NOT NULL,
    action_id             TEXT NOT NULL,
    document_id           TEXT NOT NULL,
    version               TEXT NOT NULL,
    verification_required BIGINT NOT NULL,
    due_at                TEXT NOT NULL,
    seq                   BIGINT NOT NULL,
    entry_hash            BYTEA NOT NULL,
    PRIMARY KEY (capa_id, action_id)
);

CREATE TABLE capas (
    capa_id    TEXT PRIMARY KEY,
    status     TEXT NOT NULL,              -- open | closed
    ready      BIGINT NOT NULL DEFAULT 0,
    closed_seq BIGINT
);

CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    target          TEXT NOT NULL,
    message_type    TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    correlation_id  TEXT NOT NULL,
    created_seq     BIGINT NOT NULL,
    created_at      TEXT NOT NULL,
    handover_hash   BYTEA NOT NULL,
    status          TEXT NOT NULL,         -- pending | delivered | dead
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    delivered_at    TEXT,
    outcome_seq     BIGINT
);
CREATE INDEX outbox_due ON outbox (status, target, next_attempt_at);
