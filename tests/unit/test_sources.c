/* Several sources for one blob (agent/sources.c), without a server: a
 * registry with two mirrors (--mirror, plain HTTP, nothing is contacted),
 * and transfers that are only started and ended in the books. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "prepull/options.h"
#include "prepull/registry.h"

#define MiB (1024 * 1024)

static const char *const mirrors[] = {"up.example=http://m1.example:5000",
				      "up.example=http://m2.example:5000"};

struct fixture {
	struct pp_options opts;
	struct pp_engine *e;
	struct blob *b;
	struct pp_registry *reg;
};

static int setup(void **state)
{
	struct fixture *f = pp_xcalloc(1, sizeof(*f));
	f->opts = (struct pp_options){.connections = 8,
				      .per_host = 8,
				      .stall_seconds = 30,
				      .plain_http = true,
				      .hosts_dir = "",
				      .mirrors = mirrors,
				      .n_mirrors = 2};
	struct pp_error err = {0};
	assert_int_equal(pp_registry_get(&f->reg, "up.example", &f->opts, &err), 0);
	assert_int_equal(pp_engine_new(&f->e, &f->opts, NULL, NULL, &err), 0);
	assert_int_equal(pp_engine_add(f->e, f->reg, "lib/img",
				       "sha256:"
				       "0123456789abcdef"
				       "0123456789abcdef0123456789abcdef0123456789abcdef",
				       64 * MiB, NULL, NULL, &err),
			 0);
	f->b = f->e->blobs[0];
	engine_plan_chunks(f->e, f->b, 1 * MiB);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	pp_engine_free(f->e);
	pp_registry_free_all();
	free(f);
	return 0;
}

/* Starts a request for chunk ci in the books: the source sources.c picks. */
static struct xfer *start(struct fixture *f, size_t ci)
{
	struct xfer *x = pp_xcalloc(1, sizeof(*x));
	x->e = f->e;
	x->b = f->b;
	x->chunk = ci;
	sources_pick(f->e, f->b, ci, x);
	sources_started(f->e, x);
	chunk_set_state(f->b, ci, CHUNK_ACTIVE);
	return x;
}

static void end(struct fixture *f, struct xfer *x)
{
	sources_detached(f->e, x);
	free(x);
}

static struct host_count *host(struct fixture *f, size_t src)
{
	const char *repo;
	struct pp_registry *h = blob_host(f->b, src, &repo);
	engine_host_slot(f->e, h);
	for (size_t i = 0; i < f->e->n_hosts; i++)
		if (f->e->hosts[i].reg == h)
			return &f->e->hosts[i];
	return NULL;
}

static bool ready(struct fixture *f)
{
	double wake = 0;
	return sources_ready(f->e, f->b, pp_now(), &wake);
}

/* Mirrors are probed one request each; the registry waits meanwhile;
 * a 206 opens a mirror up. */
static void test_probe_then_fan_out(void **state)
{
	struct fixture *f = *state;
	struct xfer *x0 = start(f, 0), *x1 = start(f, 1);
	assert_int_equal(x0->src, 0);
	assert_int_equal(x1->src, 1);
	assert_true(pp_registry_is_mirror(x0->reg) && pp_registry_is_mirror(x1->reg));
	assert_false(ready(f)); /* both mirrors probing: not the registry either */
	sources_ranged(x0);
	struct xfer *x2 = start(f, 2);
	assert_int_equal(x2->src, 0);
	end(f, x0);
	end(f, x1);
	end(f, x2);
}

/* Connections follow each mirror's rate per connection; the registry gets
 * none while the mirrors have room. */
static void test_share_by_rate(void **state)
{
	struct fixture *f = *state;
	struct xfer *p0 = start(f, 0), *p1 = start(f, 1);
	sources_ranged(p0);
	sources_ranged(p1);
	end(f, p0);
	end(f, p1);
	host(f, 0)->rate = 30e6;
	host(f, 1)->rate = 10e6;
	struct xfer *x[8];
	int per[3] = {0};
	for (size_t i = 0; i < 8; i++) {
		x[i] = start(f, i);
		per[x[i]->src]++;
	}
	assert_int_equal(per[0], 6);
	assert_int_equal(per[1], 2);
	assert_int_equal(per[2], 0);
	for (size_t i = 0; i < 8; i++)
		end(f, x[i]);
}

/* --per-host counts each host: the mirrors full, the registry takes the
 * rest (one probe first, as it shares the blob). */
static void test_per_host_overflow(void **state)
{
	struct fixture *f = *state;
	f->opts.per_host = 2;
	struct xfer *p0 = start(f, 0), *p1 = start(f, 1);
	sources_ranged(p0);
	sources_ranged(p1);
	struct xfer *x[4];
	int per[3] = {0};
	for (size_t i = 0; i < 3; i++) {
		x[i] = start(f, 2 + i);
		per[x[i]->src]++;
	}
	assert_int_equal(per[0] + per[1], 2);
	assert_int_equal(per[2], 1);
	assert_int_equal(host(f, 0)->n, 2);
	assert_int_equal(host(f, 1)->n, 2);
	assert_false(ready(f)); /* the registry is probing */
	sources_ranged(x[2]);
	x[3] = start(f, 5);
	assert_int_equal(x[3]->src, 2);
	assert_false(ready(f)); /* every host at --per-host */
	end(f, p0);
	end(f, p1);
	for (size_t i = 0; i < 4; i++)
		end(f, x[i]);
}

/* A mirror probing the blob holds the registry back even when it is at
 * --per-host: with both mirrors probing and full, the registry takes no
 * request (it took one when the --per-host check came first). */
static void test_probe_full_mirror(void **state)
{
	struct fixture *f = *state;
	f->opts.per_host = 1;
	struct xfer *p0 = start(f, 0), *p1 = start(f, 1);
	assert_true(pp_registry_is_mirror(p0->reg) && pp_registry_is_mirror(p1->reg));
	assert_int_equal(host(f, 0)->n, 1);
	assert_int_equal(host(f, 1)->n, 1);
	assert_false(ready(f));
	sources_ranged(p0);
	sources_ranged(p1);
	assert_true(ready(f)); /* both answered with a range and are full: the registry */
	end(f, p0);
	end(f, p1);
}

/* A racer has room of its own beyond --per-host: one racing on a mirror
 * does not make it full, so the next lane goes to the mirror, not the
 * registry. */
static void test_racer_not_per_host(void **state)
{
	struct fixture *f = *state;
	f->opts.per_host = 2;
	struct xfer *p0 = start(f, 0), *p1 = start(f, 1);
	sources_ranged(p0);
	sources_ranged(p1);
	host(f, 0)->rate = 30e6;
	host(f, 1)->rate = 30e6;
	/* p0 on the first mirror is raced there: two connections, one a racer. */
	struct xfer *r = start(f, 2);
	assert_int_equal(r->src, 0);
	r->race_of = p0;
	f->e->lanes.racers++; /* the engine's books, as xfer_race keeps them */
	f->e->xfers[f->e->n_xfers++] = r;
	assert_int_equal(host(f, 0)->n, 2);
	/* The second mirror fills up. */
	struct xfer *x1 = start(f, 3);
	assert_int_equal(x1->src, 1);
	assert_int_equal(host(f, 1)->n, 2);
	struct xfer *x = start(f, 4);
	assert_int_equal(x->src, 0); /* not the registry (2) */
	assert_int_equal(host(f, 2)->n, 0);
	f->e->n_xfers = 0;
	f->e->lanes.racers = 0;
	end(f, x);
	end(f, x1);
	end(f, r);
	end(f, p0);
	end(f, p1);
}

/* --cache-fill bypass: a mirror that ignores Range is left alone for a
 * while; the others carry the blob. */
static void test_range_ignored_backoff(void **state)
{
	struct fixture *f = *state;
	f->opts.cache_fill_bypass = true;
	struct xfer *x0 = start(f, 0);
	assert_int_equal(x0->src, 0);
	sources_detached(f->e, x0);
	assert_true(sources_range_ignored(f->e, x0));
	free(x0);
	assert_int_equal(f->b->chunks[0].state, CHUNK_PENDING);
	double wake = 0;
	assert_true(sources_ready(f->e, f->b, pp_now(), &wake));
	assert_true(wake > pp_now() && wake <= pp_now() + 0.25);
	struct xfer *x1 = start(f, 0);
	assert_int_equal(x1->src, 1);
	sources_ranged(x1);
	struct xfer *x2 = start(f, 1);
	assert_int_equal(x2->src, 1); /* not mirror 0, in its backoff */
	end(f, x1);
	end(f, x2);
}

/* A probe answered with the whole blob, in the books. */
static void ignored(struct fixture *f, struct xfer *x)
{
	sources_detached(f->e, x);
	assert_true(sources_range_ignored(f->e, x));
	free(x);
}

/* --cache-fill wait (the default): mirrors filling the blob hold the
 * registry back; each is asked again after a backoff, one request; the
 * first 206 fans out; a mirror that fills nothing within the budget is
 * dropped for the blob, and not waited for again. */
static void test_cache_fill_wait(void **state)
{
	struct fixture *f = *state;
	struct blob *b = f->b;
	ignored(f, start(f, 0));
	ignored(f, start(f, 1));
	assert_int_equal(b->chunks[0].state, CHUNK_PENDING);
	assert_int_equal(b->chunks[1].state, CHUNK_PENDING);
	double now = pp_now(), wake = 0;
	assert_false(sources_ready(f->e, b, now, &wake)); /* not the registry */
	assert_true(wake > now && wake <= now + 0.5);
	/* Mirror 0's backoff is over: one probe, and the registry still waits. */
	b->srcs[0].not_before = 0;
	struct xfer *p = start(f, 0);
	assert_int_equal(p->src, 0);
	assert_false(ready(f));
	ignored(f, p); /* still filling: the next wait is longer */
	assert_true(b->srcs[0].not_before > pp_now() + 0.45);
	/* Mirror 1 has it now: it fans out; mirror 0 still fills. */
	b->srcs[1].not_before = 0;
	p = start(f, 0);
	assert_int_equal(p->src, 1);
	sources_ranged(p);
	struct xfer *x = start(f, 1);
	assert_int_equal(x->src, 1);
	end(f, x);
	end(f, p);
	/* Mirror 0 past its budget (30 s for 64 MiB): dropped for the blob. */
	b->srcs[0].not_before = 0;
	b->srcs[0].fill_since = pp_now() - 31;
	p = start(f, 2);
	assert_int_equal(p->src, 0);
	ignored(f, p);
	assert_true(b->srcs[0].dropped);
	assert_true(host(f, 0)->fill_gave_up);
	p = start(f, 2);
	assert_int_equal(p->src, 1);
	end(f, p);
}

/* --cache-fill wait: when every filling mirror is out, the registry takes
 * the blob. */
static void test_cache_fill_gave_up(void **state)
{
	struct fixture *f = *state;
	struct blob *b = f->b;
	ignored(f, start(f, 0));
	ignored(f, start(f, 1));
	assert_false(ready(f));
	/* Mirror 1 waited in vain for another blob: taken as ignoring Range. */
	host(f, 1)->fill_gave_up = true;
	b->srcs[0].not_before = b->srcs[1].not_before = 0;
	b->srcs[0].fill_since = pp_now() - 31;
	struct xfer *p = start(f, 0);
	assert_int_equal(p->src, 0);
	ignored(f, p); /* over its budget: dropped for the blob */
	assert_true(b->srcs[0].dropped);
	p = start(f, 0);
	assert_int_equal(p->src, 1);
	ignored(f, p); /* as with bypass: left alone a while, not dropped */
	assert_false(b->srcs[1].dropped);
	p = start(f, 0);
	assert_int_equal(p->src, 2); /* the registry */
	assert_false(pp_registry_is_mirror(p->reg));
	end(f, p);
}

/* A repair asks another source than the chunk's; when the bytes differ,
 * the mirror is blamed (over the registry), dropped, and named. */
static void test_repair_and_blame(void **state)
{
	struct fixture *f = *state;
	struct blob *b = f->b;
	b->repairing = true;
	b->chunks[0].from = 1; /* mirror 0 sent it before */
	struct xfer *x = start(f, 0);
	assert_int_not_equal(x->src, 0);
	end(f, x);
	b->chunks[3].from = 3; /* the registry sent it before */
	x = start(f, 3);
	assert_int_equal(x->src, 0);
	sources_chunk_done(x);
	sources_chunk_final(f->e, b, 3, true); /* mirror 0 sent different bytes */
	assert_int_equal(b->chunks[3].from, 1);
	assert_true(host(f, 0)->dropped);
	assert_false(host(f, 2)->dropped);
	end(f, x);
	char buf[256] = "http://up.example/v2/lib/img/blobs/sha256:0123";
	sources_name_dropped(f->e, b, buf, sizeof(buf));
	assert_non_null(strstr(buf, "(mirror m1.example:5000 dropped: its bytes differed)"));
	x = start(f, 4);
	assert_int_not_equal(x->src, 0);
	end(f, x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_probe_then_fan_out, setup, teardown),
		cmocka_unit_test_setup_teardown(test_share_by_rate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_per_host_overflow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_probe_full_mirror, setup, teardown),
		cmocka_unit_test_setup_teardown(test_racer_not_per_host, setup, teardown),
		cmocka_unit_test_setup_teardown(test_range_ignored_backoff, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_fill_wait, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_fill_gave_up, setup, teardown),
		cmocka_unit_test_setup_teardown(test_repair_and_blame, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
