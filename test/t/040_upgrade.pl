# Upgrades: a database created at the first released version (0.1.0) with
# streams, a contract, a policy, aggregates and activations (on_event batched
# and immediate, on_absence, on_threshold) and events, then
# ALTER EXTENSION stream_events UPDATE, has the same objects as a fresh
# install of the current version with the same user objects, and keeps
# working: its aggregates equal their defining queries (the oracle), new
# events fire its activations exactly once, an ordinary role's channel stays
# its own, and a second UPDATE is a no-op.  The catalogs' rows (options,
# contracts, definitions, channels, notify modes) must also be those a fresh
# install makes from the same calls.
#
# The comparison: pg_dump --schema-only --binary-upgrade of both databases
# (binary-upgrade mode dumps the extension's member objects, each followed by
# ALTER EXTENSION ... ADD, and their initial privileges), cut into its
# entries, normalised (OID/xid/relfilenode-specific lines dropped, dropped
# columns and attmissingval artefacts of ALTER TABLE removed, the
# configuration tables listed by name, the lines of ACL entries sorted) and
# sorted; any difference is printed as a unified diff.  The extension's own
# objects and the user's objects (which the extension created: stream tables,
# triggers, quarantine tables, aggregate tables and views) are two tests.
# Negative controls show the comparison sees a changed column, grant, row
# level security, configuration table, function, user object and catalog row.
#
# To finish sql/stream_events--A--B.sql: run this file alone
# (scripts/tap.sh test/t/040_upgrade.pl) and make the printed diffs empty.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my $FIRST = '0.1.0';

my $node = StreamEventsTest::new_node('upgrade', q{max_connections = 40});
$node->start;

my $current = $node->safe_psql('postgres',
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'stream_events'});
isnt($current, $FIRST, "the current version ($current) is not the first one");
is( $node->safe_psql(
		'postgres',
		qq{SELECT path FROM pg_extension_update_paths('stream_events')
		   WHERE source = '$FIRST' AND target = '$current'}) ne '' ? 'yes' : 'no',
	'yes',
	"an upgrade path from $FIRST to $current exists");

sub sql { my ($db, $q) = @_; return $node->safe_psql($db, $q); }

# waits until the query returns the expected value (or times out)
sub wait_for
{
	my ($db, $query, $expected, $seconds) = @_;
	my $got;
	for (1 .. ($seconds // 60) * 10)
	{
		$got = sql($db, $query);
		return $got if $got eq $expected;
		usleep(100_000);
	}
	return $got;
}

# One base time for both databases, so that they get the same partitions.
my $base = sql('postgres', q{SELECT date_trunc('hour', now()) - interval '2 hours'});

my %query = (
	per_5min => q{
SELECT stream.tumble(occurred_at, '5 minutes') AS bucket, event_name,
       count(*) AS events, count(user_id) AS known,
       sum((properties->>'price')::numeric) AS revenue,
       max(occurred_at) AS last_seen
FROM clicks WHERE event_name <> 'noise'
GROUP BY 1, 2},
	per_user => q{
SELECT user_id, count(*) AS n, sum((properties->>'price')::numeric) AS spent
FROM clicks WHERE event_name = 'buy' GROUP BY 1});

# The user's objects, through the API of the first version only (named
# arguments it has); run in both databases.
sub create_user_objects
{
	my ($db) = @_;
	sql($db, q{
CREATE ROLE upgrade_analyst;
CREATE ROLE upgrade_owner;
}) if $db eq 'a';
	# a stream of an ordinary role, which PUBLIC cannot read, with an
	# activation on a channel of its own
	sql($db, q{CREATE TABLE upgrade_victim_v (); CREATE TABLE upgrade_victim_s ()});
	sql($db, q{
CREATE SCHEMA app AUTHORIZATION upgrade_owner;
GRANT USAGE ON SCHEMA stream TO upgrade_owner, upgrade_analyst;
SET ROLE upgrade_owner;
SELECT stream.create_stream('app.private_clicks');
SELECT stream.on_event('private_buys', 'app.private_clicks', $$event_name = 'buy'$$, channel => 'private');
RESET ROLE;
});
	sql($db, q{
SELECT stream.create_stream('clicks', partition_interval => '1 day', dedup_window => '1 day');
SELECT stream.create_stream('orders', retention => '90 days');
GRANT SELECT ON clicks TO upgrade_analyst;
GRANT SELECT ON orders TO PUBLIC;
SELECT stream.register_schema('https://example.com/schemas/money.json',
    '{"type": "number", "minimum": 0}');
SELECT stream.define_contract('clicks', 'buy', '{
    "type": "object",
    "properties": {"price": {"$ref": "https://example.com/schemas/money.json"}},
    "required": ["price"]}');
SELECT stream.define_contract('orders', 'placed', '{"type": "object"}', 'none');
SELECT stream.set_policy('clicks', on_violation => 'quarantine', on_unplanned => 'allow',
    event_name_pattern => '^[a-z_]+$', max_future => '1 hour');
SELECT stream.set_policy('orders', on_violation => 'reject', require_identity => true);
});
	for my $agg (sort keys %query)
	{
		sql($db, "SELECT stream.create_aggregate('$agg', \$q\$ $query{$agg} \$q\$)");
	}
	sql($db, q{
SELECT stream.on_event('buys', 'clicks', $$event_name = 'buy'$$, channel => 'shop',
    payload => $$jsonb_build_object('price', properties->'price')$$);
SELECT stream.on_event('big_order', 'orders', $$event_name = 'placed'$$,
    key => 'user_id', delivery => 'immediate');
SELECT stream.on_absence('abandon', 'clicks', started_by => $$event_name = 'cart'$$,
    cancelled_by => $$event_name = 'buy'$$, within => '2 seconds', key => 'user_id');
SELECT stream.on_threshold('big_spender', 'per_user', 'spent > 100', channel => 'shop');
});
	return;
}

# Events at fixed times after $base; $tag makes the user ids of a round.
sub insert_events
{
	my ($db, $tag) = @_;
	sql($db, qq{
INSERT INTO clicks (event_name, occurred_at, user_id, properties)
SELECT (ARRAY['view','cart','buy','noise'])[1 + i % 4],
       '$base'::timestamptz + i * interval '37 seconds',
       CASE WHEN i % 7 = 0 THEN NULL ELSE '$tag' || (i % 9) END,
       jsonb_build_object('price', (i % 50) + 0.5)
FROM generate_series(1, 200) i;
INSERT INTO clicks (event_name, user_id, properties) VALUES ('buy', '${tag}_bad', '{"price": -1}');
INSERT INTO orders (event_name, user_id, properties)
SELECT 'placed', '$tag' || i, '{}' FROM generate_series(1, 5) i;
});
	return;
}

sub oracle_equal
{
	my ($db, $what) = @_;
	for my $agg (sort keys %query)
	{
		my $q = $query{$agg};
		my $missing = sql($db, "SELECT count(*) FROM (($q) EXCEPT ALL TABLE $agg) d");
		my $extra = sql($db, "SELECT count(*) FROM (TABLE $agg EXCEPT ALL ($q)) d");
		my $groups = sql($db, "SELECT count(*) FROM $agg");
		is("$missing/$extra", '0/0',
			"$what: $agg equals its defining query both ways ($groups groups)");
	}
	return;
}

# -- the schema of a database, normalised -----------------------------------

sub pg_dump_schema
{
	my ($db) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[ 'pg_dump', '--schema-only', '--binary-upgrade', '--no-sync', '-d', $node->connstr($db) ],
		'>', \$out, '2>', \$err)
	  or die "pg_dump $db failed: $err";
	return $out;
}

# Returns (extension entries, user entries) as two texts.
sub normalised_schema
{
	my ($db) = @_;
	my $dump = pg_dump_schema($db);
	# the configuration tables by name (pg_dump lists them by OID)
	my $config = sql($db, q{
SELECT string_agg(format('%s %L', c::regclass, cond), E'\n' ORDER BY c::regclass::text)
FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(c, cond)
WHERE e.extname = 'stream_events'});

	$dump =~ s/\r//g;
	# pg_dump 15.14+: \restrict / \unrestrict with a random key
	$dump =~ s/^\\(un)?restrict .*\n//mg;
	my @entries = split /(?=^--\n-- (?:Name|Data for Name): )/m, $dump;
	my (@ext, @user);
	for my $e (@entries)
	{
		my ($name, $type, $schema) =
		  $e =~ /^--\n-- (?:Name|Data for Name): (.*?); Type: (.*?); Schema: (.*?); Owner: /m;
		if (!defined $name)
		{
			# the preamble: settings only
			$name = '(preamble)';
			$type = '';
			$schema = '-';
			$e =~ s/^-- Dumped (from database|by pg_dump) version .*\n//mg;
		}
		next if $type eq 'SEQUENCE SET';    # sequence values, not schema
		$e =~ s/^-- (TOC entry|Dependencies).*\n//mg;
		$e =~ s/^-- For binary upgrade, .*\n//mg;
		$e =~ s/^SELECT pg_catalog\.binary_upgrade_set_next_\w+\(.*\);\n//mg;
		# attmissingval: an artefact of ALTER TABLE ADD COLUMN ... DEFAULT
		$e =~ s/^SELECT pg_catalog\.binary_upgrade_set_missing_value\(.*\);\n//mg;
		$e =~ s/^-- set missing value\.\n//mg;
		# relfrozenxid / relminmxid of each relation
		$e =~ s/^UPDATE pg_catalog\.pg_class\nSET relfrozenxid = [^;]*;\n//mg;
		# dropped columns (kept by binary upgrade to preserve attnums)
		$e =~ s/^UPDATE pg_catalog\.pg_attribute\nSET attlen = [^;]*pg\.dropped[^;]*;\n//mg;
		$e =~ s/^ALTER TABLE ONLY \S+ DROP COLUMN "\.+pg\.dropped\.\d+\.+";\n//mg;
		$e =~ s/^\s*"\.+pg\.dropped\.\d+\.+" .*\n//mg;
		$e =~ s/,\n\);/\n);/g;
		# configuration tables by OID -> by name (listed below)
		$e =~ s/(binary_upgrade_create_empty_extension\('stream_events', [^,]+, [^,]+, '[^']*', )'\{[^}]*\}', '\{.*?\}'/$1'<config>', '<conditions>'/g;
		# an ACL entry without GRANT or REVOKE restores nothing: the ACL is
		# the default in effect (an explicit default after REVOKE/GRANT)
		next if $type eq 'ACL' && $e !~ /^(GRANT|REVOKE) /m;
		if ($type eq 'ACL')
		{
			# the order of the items of an ACL is history, not meaning
			my @parts = split /(^SELECT pg_catalog\.binary_upgrade_set_record_init_privs\((?:true|false)\);\n)/m, $e;
			$e = join '', map {
				my @l = split /^/m, $_;
				/binary_upgrade_set_record_init_privs/
				  ? $_
				  : join('', (grep { !/^(GRANT|REVOKE) / } @l), sort grep { /^(GRANT|REVOKE) / } @l)
			} @parts;
		}
		$e =~ s/\n{3,}/\n\n/g;
		my $is_ext =
		     $schema eq 'stream'
		  || $e =~ /^ALTER EXTENSION stream_events ADD /m
		  || $type eq 'EXTENSION'
		  || ($schema eq '-' && $name =~ /\bstream(_events\w*)?$/);
		if ($is_ext) { push @ext, $e; } else { push @user, $e; }
	}
	push @ext, "--\n-- extension configuration tables (pg_extension_config_dump)\n--\n$config\n";
	return (join('', sort @ext), join('', sort @user));
}

sub diff_texts
{
	my ($what, $a, $b) = @_;
	my $dir = $node->basedir;
	(my $tag = $what) =~ s/\W+/_/g;
	my ($fa, $fb) = ("$dir/$tag.upgraded.sql", "$dir/$tag.fresh.sql");
	for ([ $fa, $a ], [ $fb, $b ])
	{
		open my $fh, '>', $_->[0] or die;
		print $fh $_->[1];
		close $fh;
	}
	return '' if $a eq $b;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'diff', '-u', $fa, $fb ], '>', \$out, '2>', \$err);
	return $out;
}

# The catalogs' rows that must come out of the upgrade as a fresh install
# makes them (not ids, times, LSNs, counters or analysed trees, which hold
# OIDs), nor the worker's status.  stream.schemas.owner is left out: NULL after an upgrade means
# "registered by a superuser" (0.1.0 let only superusers register).
sub catalog_rows
{
	my ($db) = @_;
	return sql($db, q{
SELECT 'streams', relid::text, partition_interval::text, retention::text, dedup_window::text,
       quarantine::text, on_violation, on_unplanned, event_name_pattern, require_identity::text,
       max_future::text, format_assertion::text
FROM stream.streams
UNION ALL
SELECT 'contracts', stream::text, event_name, version::text, schema::text, compatibility, schema_uri,
       NULL, NULL, NULL, NULL, NULL FROM stream.contracts
UNION ALL
SELECT 'schemas', uri, schema::text, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM stream.schemas
UNION ALL
SELECT 'aggregate_defs', view::text, state_table::text, stream::text, owner::text, query, search_path,
       view_select, state_keys, NULL, NULL, NULL FROM stream.aggregate_defs
UNION ALL
SELECT 'activation_defs', name, kind, stream::text, aggregate::text, condition, cancelled_by,
       concat_ws(' | ', within, key, payload, channel, cooldown, delivery), owner::text, search_path,
       notify, concat_ws(',', condition_tree IS NULL, key_tree IS NULL, payload_tree IS NULL,
                         cancelled_by_tree IS NULL) FROM stream.activation_defs
UNION ALL
SELECT 'channels', channel, owner::text, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM stream.channels
UNION ALL
SELECT 'channel_grants', channel, grantee::text, granted_by::text, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM stream.channel_grants
ORDER BY 1, 2, 3, 4});
}

# Compares two databases; returns (extension diff, user objects diff).
sub compare_schemas
{
	my ($upgraded, $fresh) = @_;
	my ($ea, $ua) = normalised_schema($upgraded);
	my ($eb, $ub) = normalised_schema($fresh);
	return (diff_texts("extension $upgraded $fresh", $ea, $eb),
		diff_texts("user $upgraded $fresh", $ua, $ub));
}

# -- database a: created at the first version, then upgraded -------------------
sql('postgres', 'CREATE DATABASE a');
sql('postgres', 'CREATE DATABASE b');

sql('a', "CREATE EXTENSION stream_events VERSION '$FIRST'");
is(sql('a', q{SELECT extversion FROM pg_extension WHERE extname = 'stream_events'}),
	$FIRST, "a: created at $FIRST");
create_user_objects('a');
insert_events('a', 'r1_');
# on the old version the worker may or may not have caught up: not tested here
sql('a', q{SELECT stream.flush(timeout => '60 s')});

# 0.1.0 let any role write its own activation_defs rows: one on a stream
# its owner cannot read, kept with a warning (0.2.0 gives it no events),
# and roles sharing a channel; inserted in the update's transaction and
# immediate, so that the worker never loads them)
my $private_oid = sql('a', q{SELECT 'app.private_clicks'::regclass::oid});
sql('a', q{CREATE ROLE upgrade_outsider; GRANT USAGE ON SCHEMA stream TO upgrade_outsider});
my ($update_out, $update_err) = ('', '');
$node->psql('a', qq{
BEGIN;
SET ROLE upgrade_outsider;
INSERT INTO stream.activation_defs (name, stream, condition, key, channel, owner, search_path, delivery)
VALUES ('forged', $private_oid, 'true', 'user_id', 'forged', 'upgrade_outsider', 'public', 'immediate');
RESET ROLE;
-- (0.1.0 let roles share a channel)
INSERT INTO stream.activation_defs (name, stream, condition, key, channel, owner, search_path, delivery)
VALUES ('shared_a', 'app.private_clicks', 'true', 'user_id', 'shared', 'upgrade_owner', 'public', 'immediate'),
       ('shared_b', 'clicks', 'true', 'user_id', 'shared', 'upgrade_analyst', 'public', 'immediate');
-- (as 0.1.0 let a stream's owner write them: other forged values)
UPDATE stream.streams SET quarantine = 'clicks_quarantine' WHERE relid = 'orders'::regclass;
INSERT INTO stream.contracts (stream_id, stream, event_name, version, schema, compatibility, schema_uri)
VALUES ((SELECT stream_id FROM stream.streams WHERE relid = 'clicks'::regclass), 'orders', 'forged', 1,
        '{"not": {}}', 'none', 'urn:forged');
INSERT INTO stream.aggregate_defs (view, state_table, stream, owner, query, query_tree)
VALUES ('upgrade_victim_v', 'upgrade_victim_s', 'clicks', 'upgrade_outsider', 'SELECT 1', '{FORGED}');
ALTER EXTENSION stream_events UPDATE;
COMMIT;
}, stdout => \$update_out, stderr => \$update_err, on_error_die => 1);
like($update_err, qr/WARNING:  activation "forged": its owner upgrade_outsider cannot read app\.private_clicks, so it gets no events/,
	'the update warns of an activation whose owner cannot read its stream');
# the extension's owner: the bootstrap superuser (postgres as root, the OS user otherwise)
my $superuser = sql('a', q{SELECT rolname FROM pg_roles WHERE oid = 10});
like($update_err, qr/WARNING:  channel "shared" is used by activations of several roles \(upgrade_analyst, upgrade_owner\): it now belongs to \Q$superuser\E/,
	'the update warns of a channel used by several roles');
is(sql('a', q{SELECT string_agg(channel || '=' || owner, ',' ORDER BY channel) FROM stream.channels
              WHERE channel IN ('forged', 'shared', 'private')}),
	"forged=upgrade_outsider,private=upgrade_owner,shared=$superuser",
	"a channel belongs to its activations' owner, a shared one to the extension's owner");
# (gone again, for the comparisons below)
sql('a', q{DELETE FROM stream.activation_defs WHERE name IN ('forged', 'shared_a', 'shared_b');
           DELETE FROM stream.channels WHERE channel IN ('forged', 'shared')});
like($update_err, qr/WARNING:  stream (public\.)?orders: quarantine (public\.)?clicks_quarantine is not its quarantine table; cleared/,
	'the update clears a quarantine that is not the stream\'s');
like($update_err, qr/WARNING:  contract for event "forged" version 1 of (public\.)?orders removed/,
	'the update removes a contract filed under another stream\'s id');
like($update_err, qr/WARNING:  continuous aggregate (public\.)?upgrade_victim_v removed: its owner upgrade_outsider does not own/,
	'the update removes an aggregate whose owner does not own its tables');
is(sql('a', q{SELECT count(*) FROM stream.contracts WHERE event_name = 'forged'})
	  . sql('a', q{SELECT count(*) FROM stream.aggregate_defs WHERE view = 'upgrade_victim_v'::regclass}),
	'00', 'the forged contract and aggregate are gone');
# (the quarantine put back, for the comparisons below)
sql('a', q{UPDATE stream.streams SET quarantine = 'orders_quarantine' WHERE relid = 'orders'::regclass});
sql('a', q{REVOKE USAGE ON SCHEMA stream FROM upgrade_outsider});
is(sql('a', q{SELECT extversion FROM pg_extension WHERE extname = 'stream_events'}),
	$current, "a: updated to $current");
# 0.1.0's dedup keys of all streams moved to one table per stream, which is
# not a member of the extension (pg_dump dumps it with its rows); a retry of
# an event stored before the update is still dropped
my $clicks_sid = sql('a', q{SELECT stream_id FROM stream.streams WHERE relid = 'clicks'::regclass});
is(sql('a', qq{SELECT (SELECT count(*) FROM stream.dedup_keys_$clicks_sid)
                    = (SELECT count(*) FROM clicks)
               AND (SELECT count(*) FROM clicks) > 0
               AND to_regclass('stream.dedup_keys') IS NULL}),
	't', "a: clicks' keys are in stream.dedup_keys_$clicks_sid, 0.1.0's table is gone");
is(sql('a', qq{SELECT count(*) FROM pg_depend WHERE classid = 'pg_class'::regclass
               AND objid = 'stream.dedup_keys_$clicks_sid'::regclass AND deptype = 'e'}),
	'0', 'a: the key table is not a member of the extension');
is(sql('a', q{WITH r AS (INSERT INTO clicks (event_id, event_name)
                         SELECT event_id, 'retry' FROM clicks ORDER BY received_at LIMIT 3 RETURNING 1)
              SELECT count(*) FROM r}),
	'0', 'a: retries of events stored before the update are dropped');

# -- database b: a fresh install of the current version ----------------------
sql('b', 'CREATE EXTENSION stream_events');
create_user_objects('b');
insert_events('b', 'r1_');
sql('b', q{SELECT stream.flush(timeout => '60 s')});

# -- same objects ------------------------------------------------------------------
my ($ext_diff, $user_diff) = compare_schemas('a', 'b');
ok($ext_diff eq '', "the extension's objects after $FIRST -> $current equal a fresh $current install");
diag("extension objects differ (- upgraded, + fresh):\n$ext_diff") if $ext_diff ne '';
ok($user_diff eq '', "the user's objects (streams, quarantine, aggregates) equal those of a fresh install");
diag("user objects differ (- upgraded, + fresh):\n$user_diff") if $user_diff ne '';

my $rows_diff = diff_texts('catalog rows', catalog_rows('a'), catalog_rows('b'));
ok($rows_diff eq '', 'the catalogs\' rows after the update are those a fresh install makes');
diag("catalog rows differ (- upgraded, + fresh):\n$rows_diff") if $rows_diff ne '';

# a second UPDATE is a no-op
my ($before_ext, $before_user) = normalised_schema('a');
my ($out, $err) = ('', '');
$node->psql('a', 'ALTER EXTENSION stream_events UPDATE', stdout => \$out, stderr => \$err);
like($err, qr/already installed/, 'a second ALTER EXTENSION UPDATE has nothing to do');
my ($after_ext, $after_user) = normalised_schema('a');
is(diff_texts('noop', $before_ext . $before_user, $after_ext . $after_user), '',
	'and changes no object');

# -- keeps working -----------------------------------------------------------------
for my $db ('a', 'b')
{
	my $kind = $db eq 'a' ? 'upgraded' : 'fresh';
	insert_events($db, 'r2_');
	sql($db, q{SELECT stream.flush(timeout => '60 s')});
	oracle_equal($db, "$kind ($db) after new events");

	is(sql($db, q{SELECT count(*) FROM clicks_quarantine}), '2',
		"$kind: the contract quarantines an invalid event of each round");
	my $buys = sql($db, q{SELECT count(*) FROM clicks WHERE event_name = 'buy'});
	is( wait_for(
			$db, q{SELECT count(*) FROM stream.activations WHERE activation = 'buys'}, $buys),
		$buys,
		"$kind: on_event fired once for every buy, before and after the update ($buys)");
	is(sql($db, q{SELECT count(*) FROM stream.activations WHERE activation = 'big_order'}),
		'10', "$kind: the immediate on_event fired once per order");

	# NOTIFY: ids only for the stream PUBLIC cannot read (clicks), the row
	# for the one it can (orders, immediate delivery).  After the update
	# this needs the worker to load the definitions again (notify was
	# set by the upgrade script).
	my ($in, $out, $err) = ('', '', '');
	my $listener = IPC::Run::start(
		[ 'psql', '-X', '-A', '-t', '-d', $node->connstr($db) ],
		'<', \$in, '>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	$in .= "LISTEN shop;\nLISTEN big_order;\nSELECT 'listening';\n";
	$listener->pump until $out =~ /listening/;
	sql($db, q{INSERT INTO clicks (event_name, user_id, properties) VALUES ('buy', 'listened', '{"price": 1}');
               INSERT INTO orders (event_name, user_id, properties) VALUES ('placed', 'listened', '{}')});
	sql($db, q{SELECT stream.flush(timeout => '60 s')});
	$in .= "SELECT pg_sleep(0.5);\nSELECT 'done';\n";
	$listener->pump until $out =~ /done/;
	$in .= "\\q\n";
	$listener->finish;
	my @shop = ($out =~ /notification "shop" with payload "(.*?)" received/g);
	my @orders = ($out =~ /notification "big_order" with payload "(.*?)" received/g);
	ok(@shop == 1 && $shop[0] =~ /^\{"id": \d+\}$/,
		"$kind: the activation of a stream PUBLIC cannot read notifies its id only (@shop)");
	ok(@orders == 1 && $orders[0] =~ /"key": ?"listened"/,
		"$kind: the activation of a stream PUBLIC can read notifies the row");

	# an absence timer started and not cancelled runs out and fires
	sql($db, q{INSERT INTO clicks (event_name, user_id, properties) VALUES ('cart', 'lonely', '{}')});
	is( wait_for(
			$db,
			q{SELECT count(*) FROM stream.activations WHERE activation = 'abandon' AND key = 'lonely'},
			'1'),
		'1',
		"$kind: on_absence fires for a new cart without a buy");

	# a threshold rises
	sql($db, q{INSERT INTO clicks (event_name, user_id, properties)
               VALUES ('buy', 'whale', '{"price": 500}')});
	sql($db, q{SELECT stream.flush(timeout => '60 s')});
	is( wait_for(
			$db,
			q{SELECT count(*) FROM stream.activations
              WHERE activation = 'big_spender' AND key::text LIKE '%whale%'},
			'1'),
		'1',
		"$kind: on_threshold fires when a new group rises");
	oracle_equal($db, "$kind ($db) at the end");

	# the ordinary role's channel is its own: it consumes it, others do not
	sql($db, q{INSERT INTO app.private_clicks (event_name, user_id) VALUES ('buy', 'p1'), ('buy', 'p2')});
	is( wait_for(
			$db, q{SELECT count(*) FROM stream.activations WHERE activation = 'private_buys'}, '2'),
		'2', "$kind: the private stream's activation fires");
	is( sql($db, q{SET ROLE upgrade_owner;
                   SELECT count(*) FROM stream.consume('upgrade_consumer', 'private')}),
		'2', "$kind: the stream's owner consumes its channel");
	is( sql($db, q{SET ROLE upgrade_analyst;
                   SELECT count(*) FROM stream.activations WHERE channel = 'private'}),
		'0', "$kind: another role sees none of its outbox rows");
	my ($rc, $o, $e) = $node->psql($db, q{SET ROLE upgrade_analyst;
                   SELECT * FROM stream.consume('upgrade_snoop', 'private')});
	like($e, qr/permission denied/, "$kind: another role cannot consume it");
}

# -- negative controls: the comparison sees a difference ---------------------------
# (each against the schema of b as it is now, so they hold whatever the
# comparison of a and b above found)
my ($base_ext, $base_user) = normalised_schema('b');
sub changes
{
	my ($what) = @_;
	my ($ext, $user) = normalised_schema('b');
	return diff_texts("control $what", $base_ext . $base_user, $ext . $user);
}

sql('b', 'ALTER TABLE stream.streams ADD COLUMN upgrade_canary integer');
like(changes('column'), qr/^\+\s+upgrade_canary integer/m,
	'negative control: an extra column of a catalog is seen');
sql('b', 'ALTER TABLE stream.streams DROP COLUMN upgrade_canary');
is(changes('dropped column'), '',
	'a column added and dropped again leaves no difference (dropped columns are ignored)');

sql('b', 'GRANT SELECT ON stream.queue_txns TO upgrade_analyst');
like(changes('grant'), qr/^\+GRANT SELECT ON TABLE stream\.queue_txns TO upgrade_analyst;/m,
	'negative control: a different grant is seen');
sql('b', 'REVOKE SELECT ON stream.queue_txns FROM upgrade_analyst');

sql('b', 'ALTER TABLE stream.consumer_acks DISABLE ROW LEVEL SECURITY');
like(changes('rls'), qr/^-ALTER TABLE stream\.consumer_acks ENABLE ROW LEVEL SECURITY;/m,
	'negative control: row level security turned off is seen');
sql('b', 'ALTER TABLE stream.consumer_acks ENABLE ROW LEVEL SECURITY');

# (what pg_extension_config_dump would record, outside an extension script)
sql('b', q{UPDATE pg_catalog.pg_extension
           SET extconfig = extconfig || 'stream.consumer_acks'::regclass::oid, extcondition = extcondition || ''::text
           WHERE extname = 'stream_events'});
like(changes('config'), qr/^\+stream\.consumer_acks ''/m,
	'negative control: a configuration table registration is seen');

my $rows_before = catalog_rows('b');
sql('b', q{UPDATE stream.activation_defs SET notify = 'full' WHERE name = 'buys'});
like(diff_texts('control rows', $rows_before, catalog_rows('b')), qr/^\+activation_defs\|buys\|.*\|full\|/m,
	'negative control: a different catalog row is seen');

sql('b', q{CREATE OR REPLACE FUNCTION stream._search_path() RETURNS text
           LANGUAGE sql STABLE AS $$SELECT 'not the same'$$});
like(changes('function'), qr/^\+.*not the same/m, 'negative control: a different function body is seen');

sql('b', q{COMMENT ON TABLE clicks IS 'changed'});
like(changes('user object'), qr/^\+COMMENT ON TABLE public\.clicks IS 'changed';/m,
	'negative control: a different user object is seen');

$node->stop;
done_testing();
