-- The compliance report reads a revision's completions by document and
-- version (integration::queries::compliance_of_revision); without this index
-- every revision scanned the whole completions table.
CREATE INDEX completions_document ON completions (document_id, version);
