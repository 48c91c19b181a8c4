-- When, in business time, the person had to be trained from: the revision's
-- effective time, or later when they took up the job function later
-- (docs/REPORTS.md §4.1). NULL for assignments recorded before it existed:
-- read it as `effective_at`.
ALTER TABLE assignments ADD COLUMN required_from TEXT;
