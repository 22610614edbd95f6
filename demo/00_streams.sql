-- demo step 00: the extension and the streams the demo feeds.
--   clicks       the web shop's click-stream (page views to purchases)
--   shop.orders  completed orders, sent by the shop's back end
\echo
\echo '== 00  streams'
CREATE EXTENSION IF NOT EXISTS stream_events;

\echo '   SELECT stream.create_stream(''clicks'');   -- daily partitions, 7-day dedup window'
SELECT stream.create_stream('clicks') \g /dev/null
CREATE SCHEMA IF NOT EXISTS shop;
\echo '   SELECT stream.create_stream(''shop.orders'', partition_interval => ''1 day'','
\echo '                               retention => ''400 days'', dedup_window => ''7 days'');'
SELECT stream.create_stream('shop.orders', partition_interval => '1 day',
                            retention => '400 days', dedup_window => '7 days') \g /dev/null
