-- Each attempt's launches carry a random id: an agent that already holds a rank of the same job, attempt and
-- rank number from another database (a restored backup, a cluster made anew over old nodes) can tell it is not
-- this attempt's, instead of answering with the old rank's status.
ALTER TABLE attempts ADD COLUMN launch_id uuid NOT NULL DEFAULT gen_random_uuid();
