-- demo step 60: the background worker adopts the events that landed in a
-- default partition (occurred_at outside every partition, e.g. the months-old
-- replay): it creates their partitions and moves them.  We wait for it.
\echo
\echo '== 60  background worker: adopting events from the default partitions'

CREATE OR REPLACE FUNCTION demo_gen.row_count(rel regclass) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %s', rel) INTO n;
    RETURN n;
END $$;

CREATE OR REPLACE VIEW demo_gen.default_partitions AS
SELECT s.relid AS stream, c.oid::regclass AS default_partition
FROM stream.streams AS s
JOIN pg_inherits AS i ON i.inhparent = s.relid
JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT';

\echo '   right after the load:'
SELECT stream, default_partition, demo_gen.row_count(default_partition) AS events_waiting
FROM demo_gen.default_partitions ORDER BY 1;

DO $$
DECLARE
    started  timestamptz := clock_timestamp();
    waiting  bigint;
BEGIN
    LOOP
        SELECT coalesce(sum(demo_gen.row_count(default_partition)), 0) INTO waiting
        FROM demo_gen.default_partitions;
        IF waiting = 0 THEN
            RAISE NOTICE 'the worker adopted them within % s',
                round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
            EXIT;
        END IF;
        IF clock_timestamp() > started + interval '60 seconds' THEN
            RAISE WARNING 'the worker has not adopted % events after 60 s; see SELECT * FROM stream.worker_status()', waiting;
            EXIT;
        END IF;
        -- end the transaction: it must not keep a lock on the default
        -- partitions, which the worker needs to attach the new partitions
        COMMIT;
        PERFORM pg_sleep(0.5);
    END LOOP;
END $$;

\echo '   the partitions the worker made for the months-old events:'
SELECT c.relname AS partition,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']*)''\)') AS range_from,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']*)''\)') AS range_to,
       demo_gen.row_count(c.oid) AS events
FROM pg_inherits AS i
JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = 'clicks'::regclass
  AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
  AND substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']*)''\)')::timestamptz < now() - interval '30 days'
ORDER BY 2;
