-- Named reviewer accounts for the console: a role and a salted password hash (never the password).

CREATE TABLE reviewers (
    name          text PRIMARY KEY,
    role          text NOT NULL CHECK (role IN ('reviewer', 'senior', 'admin')),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
