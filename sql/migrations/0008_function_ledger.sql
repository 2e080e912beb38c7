-- The ledger of sql/functions/: which file was last applied, with which
-- checksum. Functions, procedures and triggers live there, outside the
-- numbered migrations, and `qmaint migrate` re-applies a file (CREATE OR
-- REPLACE) whenever its checksum differs from its row here. A database
-- installed by 0.1.0 has no rows, so its first migrate applies every file.
CREATE TABLE qmaint.schema_functions (
  file text PRIMARY KEY,
  checksum text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);
