-- 0008: a waiting job's reason as data too: the code (`capacity`, `quota`, `budget`, `reserved`, `unschedulable`)
-- beside the sentence, so scripts and dashboards need not parse text.
ALTER TABLE jobs ADD COLUMN reason_code text;
