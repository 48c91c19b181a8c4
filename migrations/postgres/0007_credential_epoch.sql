-- A user's credential epoch: raised whenever their credentials or standing
-- change (password set or reset, roles, status: lock, unlock, deactivation).
-- A session is valid only under the epoch it was opened in (or moved to by
-- the change it made itself), so no session outlives a credential change,
-- even one opened in a race with it (docs/SIGNATURES.md §4).
ALTER TABLE users ADD COLUMN credential_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
