-- demo step 95: what the contracts did.
\echo
\echo '== 95  data contracts: quarantine and compliance'

\echo '-- quarantined events with their errors (JSON pointer + message):'
SELECT event_name, anonymous_id, contract_version AS v,
       (SELECT string_agg(coalesce(nullif(e ->> 'instance_path', ''), '(root)') || ': ' || (e ->> 'message'), '; ')
        FROM jsonb_array_elements(errors) e) AS errors
FROM clicks_quarantine ORDER BY quarantined_at LIMIT 12;

\echo '-- compliance per event name (SELECT * FROM stream.compliance):'
SELECT event_name, checked, passed, quarantined, unplanned, compliance_rate
FROM stream.compliance WHERE stream = 'clicks' ORDER BY checked DESC;

\echo '-- and per stream (stream.stats):'
SELECT stream, events, checked, passed, quarantined, compliance_rate FROM stream.stats ORDER BY 1;
