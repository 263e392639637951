// node-postgres with pg-cursor and pg-query-stream against `imageql serve`, as a Node dashboard
// uses them: untyped parameters (arrays too), cursors, streams, changes with $n, prepared
// statements by name, errors. Prints one JSON object; each entry is a value or {error, message}.

const { Client } = require('pg');
const Cursor = require('pg-cursor');
const QueryStream = require('pg-query-stream');

const report = {};

async function attempt(name, run) {
  try {
    report[name] = await run();
  } catch (e) {
    report[name] = { error: e.code || null, message: e.message };
  }
}

function streamed(client, text, batchSize) {
  return new Promise((resolve, reject) => {
    const ids = [];
    const stream = client.query(new QueryStream(text, [], { batchSize }));
    stream.on('data', (row) => ids.push(row.id));
    stream.on('end', () => resolve(ids));
    stream.on('error', reject);
  });
}

(async () => {
  const url = new URL(process.env.IMAGEQL_URL);
  const client = new Client({
    host: url.hostname,
    port: Number(url.port),
    user: decodeURIComponent(url.username),
    database: url.pathname.slice(1),
    password: process.env.IMAGEQL_PASSWORD,
  });
  await client.connect();
  const rows = async (text, values) => (await client.query(text, values)).rows;

  await attempt('one', async () => (await rows('SELECT 1 AS one'))[0].one);
  await attempt('big', async () => (await rows('SELECT 3000000000 AS big'))[0].big);
  const ids = (await rows('SELECT id FROM linode.images.images WHERE NOT is_public ORDER BY id')).map((r) => r.id);
  report.ids = ids;
  await attempt('any', async () =>
    (await rows('SELECT id FROM linode.images.images WHERE id = ANY($1) ORDER BY id', [ids.slice(0, 2)])).map((r) => r.id));
  await attempt('count_above', async () =>
    (await rows('SELECT count(*)::int AS n FROM linode.images.images WHERE size > $1', [2000]))[0].n);
  await attempt('typed', async () => {
    const [row] = await rows('SELECT tags, created, size, is_public FROM linode.images.images WHERE id = $1', [ids[0]]);
    return { tags: Array.isArray(row.tags), created: row.created instanceof Date, size: typeof row.size, is_public: row.is_public };
  });
  await attempt('cursor', async () => {
    const cursor = client.query(new Cursor('SELECT id FROM linode.images.images WHERE NOT is_public ORDER BY id'));
    const first = await cursor.read(3);
    const second = await cursor.read(3);
    await cursor.close();
    return first.concat(second).map((r) => r.id);
  });
  await attempt('stream', () => streamed(client, 'SELECT id FROM linode.images.images WHERE NOT is_public ORDER BY id', 2));
  await attempt('usage_literals', async () =>
    (await rows("SELECT count(*)::int AS n FROM linode.images.usage('2026-11-01', '2026-12-01')"))[0].n);
  await attempt('usage_parameters', async () =>
    (await rows('SELECT count(*)::int AS n FROM linode.images.usage($1, $2)', ['2026-11-01', '2026-12-01']))[0].n);
  const [instance] = await rows('SELECT id FROM linode.linode.instances ORDER BY id LIMIT 1');
  await attempt('disks_unquoted', async () =>
    (await rows('SELECT id FROM linode.linode.disks WHERE linodeId = $1 ORDER BY id', [instance.id])).map((r) => r.id));
  await attempt('search_path', async () => {
    await client.query('SET search_path TO images, public');
    const [row] = await rows('SELECT count(*)::int AS n FROM images WHERE NOT is_public');
    await client.query('RESET search_path');
    return row.n;
  });
  await attempt('prepared_by_name', async () => {
    const prepare = await client.query('PREPARE big(bigint) AS SELECT count(*)::int AS n FROM linode.images.images WHERE size > $1');
    const [row] = await rows('EXECUTE big(2000)');
    const deallocate = await client.query('DEALLOCATE big');
    return { prepare: prepare.command, n: row.n, deallocate: deallocate.command };
  });
  await attempt('execute_deallocated', () => rows('EXECUTE big(2000)'));
  await attempt('change', async () => {
    const [disk] = await rows('SELECT id FROM linode.linode.disks WHERE linodeId = $1 ORDER BY id LIMIT 1', [instance.id]);
    const inserted = await client.query(
      'INSERT INTO linode.images.images (disk_id, label) VALUES ($1, $2) RETURNING id, label', [disk.id, 'from-node']);
    const id = inserted.rows[0].id;
    const replaced = await client.query('REPLACE linode.images.images SET label = $1 WHERE id = $2', ['renamed-by-node', id]);
    const [after] = await rows('SELECT label FROM linode.images.images WHERE id = $1', [id]);
    const deleted = await client.query('DELETE FROM linode.images.images WHERE id = $1', [id]);
    return { id, inserted: inserted.rowCount, replaced: replaced.rowCount, label: after.label, deleted: deleted.rowCount };
  });
  for (const [name, text] of [
    ['syntax', 'SELEC 1'],
    ['no_function', 'SELECT no_such_function(1)'],
    ['no_table', 'SELECT * FROM no_such_table'],
    ['no_column', 'SELECT no_such_column FROM linode.images.images'],
    ['bad_cast', 'SELECT id::int FROM linode.images.images'],
  ]) {
    await attempt(name, () => rows(text));
  }
  await attempt('after_errors', async () => (await rows('SELECT 2 AS two'))[0].two);
  await client.end();
  console.log(JSON.stringify(report));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
