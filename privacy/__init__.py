"""Privacy by design: personal data sealed in the log, keys, erasure, subject access.

* ``privacy.crypto`` — pure: keyed identifier hashes, sealing/opening/redacting events.
* ``privacy.keystore`` — the ``KeyStore`` port (data keys per subject, the identifier
  hash key) and ``SqlKeyStore`` (PostgreSQL schema ``privacy`` or an SQLite file),
  which wraps every key with a master key so a KMS can take its place.
* ``privacy.protect`` — ``Protector``: seals batches of events for the log and opens
  batches of log records; ``SealingEventLog`` wraps any ``EventLog`` at the doors.
* ``privacy.subject`` — erasure requests and subject access exports.
"""
