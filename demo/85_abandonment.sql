-- demo step 85: cart abandonment — "add_to_cart not followed by purchase
-- within T" as durable timers the worker fires (scripts/demo.sh then runs a
-- live generator and shows stream_listen printing the activations).
\echo
\echo '== 85  cart abandonment (on_absence), within 4 seconds for the demo'
\echo '   SELECT stream.on_absence(''cart_abandoned'', ''clicks'', started_by => $$event_name = ''add_to_cart''$$,'
\echo '          cancelled_by => $$event_name = ''purchase''$$, within => ''4 seconds'', key => ''user_id'', channel => ''recovery'');'
SELECT stream.on_absence('cart_abandoned', 'clicks',
    started_by => $$event_name = 'add_to_cart'$$,
    cancelled_by => $$event_name = 'purchase'$$,
    within => '4 seconds', key => 'user_id', channel => 'recovery',
    payload => $$jsonb_build_object('user', user_id, 'sku', properties->>'sku')$$) \g /dev/null
SELECT stream.flush(NULL, '60 s') \g /dev/null
\echo '-- and a threshold: a customer whose spend passes 100 (edge-triggered, once)'
\echo '   SELECT stream.create_aggregate(''spend_per_user'', $$SELECT user_id, sum((properties->>''revenue'')::numeric) AS spend'
\echo '          FROM clicks WHERE event_name = ''purchase'' GROUP BY 1$$);'
\echo '   SELECT stream.on_threshold(''vip_customer'', ''spend_per_user'', ''spend >= 100'', channel => ''ops'');'
SELECT stream.create_aggregate('spend_per_user', $$SELECT user_id, sum((properties->>'revenue')::numeric) AS spend
    FROM clicks WHERE event_name = 'purchase' GROUP BY 1$$) \g /dev/null
SELECT stream.on_threshold('vip_customer', 'spend_per_user', 'spend >= 100', channel => 'ops') \g /dev/null
SELECT stream.flush(NULL, '60 s') \g /dev/null
