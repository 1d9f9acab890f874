/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/layer-zlib: the COMPRESS=DEFLATE layer (RFC 4978) over zlib. */
#include "internal.h"

#include <errno.h>
#include <malloc.h> /* malloc_usable_size: prot_memory's count */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <ringprot/prot-layer.h>

/*
 * RFC 4978 §4: raw deflate (no zlib header), and every response the
 * server sends is followed by a sync flush so the client can decode it
 * whole. A prot flush is that point: each flushed chunk is deflated with
 * Z_SYNC_FLUSH and so ends in the empty stored block 00 00 FF FF.
 * Window bits -15 and memory level 9 as Cyrus (spec 2.17).
 */
#define ZLIB_WBITS    (-15)
#define ZLIB_MEMLEVEL 9

/*
 * Cyrus's zbuf: 4096 + 6 bytes per exposed window (spec 2.2). Inflate
 * itself may run further ahead, up to DEC_CAP bytes per call, so a
 * decompression bomb never costs more than that much memory at a time.
 */
#define ZLIB_WINDOW 4102
#define DEC_CAP	    65536

/*
 * Incompressible data (spec 2.17, 6 item 25, done by outcome instead of
 * by file signature): a chunk of at least JUDGE_MIN bytes that does not
 * shrink sends the next `skip` chunks as stored blocks (level 0: a copy
 * into the window instead of a match search), doubling the pause after
 * every miss up to SKIP_MAX chunks, so compressible data that follows
 * waits at most that long (64 KiB) to be compressed again; a chunk that
 * compresses resets the pause.
 */
#define JUDGE_MIN 1024
#define SKIP_MIN  4
#define SKIP_MAX  16

/*
 * Parking (prot_release). zlib's state is most of what a compressed
 * connection costs: deflate at memory level 9 allocates about 390 KiB
 * (window 64 KiB, prev 64, head 128, pending 128, its state 6), inflate
 * about 7 KiB plus its 32 KiB window (counted by zl_alloc below). Of
 * that only the last 32 KiB of plaintext matter to the bytes that follow
 * (the peer's inflate may be pointed back that far, and ours may be
 * pointed back that far by the peer's deflate). At a flush boundary, the
 * only place an RFC 4978 stream rests, release keeps exactly that
 * history (deflateGetDictionary/inflateGetDictionary, at most 32 KiB
 * each way, less early in a session), ends the zlib stream, and the next
 * encode/decode starts a new one primed with it
 * (deflateSetDictionary/inflateSetDictionary, allowed at any point of a
 * raw stream). The wire does not change: a raw deflate stream is a
 * sequence of blocks, and after a sync flush the next block starts on a
 * byte boundary whichever zlib stream makes it. A stream not at such a
 * boundary (a block half received, input kept in pend) keeps its state.
 */

struct zl {
	z_stream z;
	bool write;
	bool ended; /* read: the peer sent a final block */
	int level;  /* configured */
	int cur;    /* the level deflate runs at now */
	unsigned skip, backoff;
	bool more_out;	 /* read: inflate may hold more output */
	struct buf pend; /* read: input inflate has not consumed */
	struct pl_zlib_stats st;
	size_t mem;	     /* bytes zlib holds (zl_alloc), usable sizes */
	bool parked;	     /* z ended by zl_release; dict is its history */
	unsigned dict_len;   /* bytes in dict */
	unsigned char *dict; /* the last plaintext, at most 32 KiB */
	char err[128];
};

/* zlib's allocator, counted for prot_memory(). */
static voidpf zl_alloc(voidpf opaque, uInt items, uInt size)
{
	struct zl *zl = opaque;
	void *p;

	if (size != 0 && items > SIZE_MAX / size)
		return Z_NULL;
	p = malloc((size_t)items * size);
	if (p != NULL)
		zl->mem += malloc_usable_size(p);
	return p;
}

static void zl_free(voidpf opaque, voidpf p)
{
	struct zl *zl = opaque;

	if (p != NULL)
		zl->mem -= malloc_usable_size(p);
	free(p);
}

static int zl_fail(struct prot__layer *l, const char *what, int zret,
		   int err)
{
	struct zl *zl = l->state;

	snprintf(zl->err, sizeof(zl->err), "%s: %s", what,
		 zl->z.msg != NULL ? zl->z.msg : zError(zret));
	l->errtext = zl->err;
	return err;
}

static void zl_end(struct zl *zl)
{
	if (zl->write)
		(void)deflateEnd(&zl->z);
	else
		(void)inflateEnd(&zl->z);
}

/* (De)compression on: the zlib stream, as zl_new makes it. */
static int zl_init(struct zl *zl)
{
	zl->z.zalloc = zl_alloc;
	zl->z.zfree = zl_free;
	zl->z.opaque = zl;
	if (zl->write)
		return deflateInit2(&zl->z, zl->cur, Z_DEFLATED, ZLIB_WBITS,
				    ZLIB_MEMLEVEL, Z_DEFAULT_STRATEGY);
	return inflateInit2(&zl->z, ZLIB_WBITS);
}

/* After zl_release: a new zlib stream with the history kept. */
static int zl_resume(struct prot__layer *l)
{
	struct zl *zl = l->state;
	int zret;

	if (!zl->parked)
		return 0;
	zret = zl_init(zl);
	if (zret != Z_OK)
		return zl_fail(l, "Error resuming compression", zret, -ENOMEM);
	if (zl->dict_len > 0) {
		zret = zl->write ? deflateSetDictionary(&zl->z, zl->dict,
							zl->dict_len)
				 : inflateSetDictionary(&zl->z, zl->dict,
							zl->dict_len);
		if (zret != Z_OK) {
			/* The stream stays parked: nothing was lost. */
			zl_end(zl);
			return zl_fail(l, "Error resuming compression", zret,
				       -EIO);
		}
	}
	free(zl->dict);
	zl->dict = NULL;
	zl->dict_len = 0;
	zl->parked = false;
	return 0;
}

/* Make out hold at least want more bytes and point deflate/inflate at it. */
static int out_room(z_stream *z, struct buf *out, size_t want)
{
	int ret = prot__buf_reserve(out, want);

	if (ret < 0)
		return ret;
	z->next_out = (Bytef *)out->s + out->len;
	z->avail_out = (uInt)(out->alloc - out->len - 1);
	return 0;
}

static int set_level(struct prot__layer *l, int level, struct buf *out)
{
	struct zl *zl = l->state;
	size_t before = out->len;
	int ret;

	if (level == zl->cur)
		return 0;
	/*
	 * At a chunk boundary the previous sync flush has emptied deflate,
	 * so deflateParams has nothing left to flush; give it room anyway.
	 */
	ret = out_room(&zl->z, out, 64);
	if (ret < 0)
		return ret;
	zl->z.next_in = NULL;
	zl->z.avail_in = 0;
	ret = deflateParams(&zl->z, level, Z_DEFAULT_STRATEGY);
	out->len = (size_t)((char *)zl->z.next_out - out->s);
	zl->st.wire += out->len - before;
	if (ret != Z_OK && ret != Z_BUF_ERROR)
		return zl_fail(l, "Error setting compression level", ret,
			       -EIO);
	zl->cur = level;
	return 0;
}

/* After a chunk at a real level: did it shrink? Pick the next level. */
static void judge(struct zl *zl, size_t in_len, size_t produced)
{
	if (zl->cur == 0) {
		if (zl->skip > 0)
			zl->skip--;
		return;
	}
	if (in_len < JUDGE_MIN)
		return;
	if (produced >= in_len) {
		zl->skip = zl->backoff;
		if (zl->backoff < SKIP_MAX)
			zl->backoff *= 2;
	} else {
		zl->backoff = SKIP_MIN;
	}
}

static int deflate_encode(struct prot__layer *l, const unsigned char *in,
			  size_t in_len, struct buf *out)
{
	struct zl *zl = l->state;
	size_t before;
	int ret, zret;

	zl->z.msg = NULL;
	ret = zl_resume(l);
	if (ret < 0)
		return ret;
	ret = set_level(l, zl->skip > 0 ? 0 : zl->level, out);
	if (ret < 0)
		return ret;
	before = out->len;
	zl->z.next_in = (Bytef *)(uintptr_t)in;
	zl->z.avail_in = (uInt)in_len;
	do {
		ret = out_room(&zl->z, out, deflateBound(&zl->z, in_len) + 16);
		if (ret < 0)
			return ret;
		zret = deflate(&zl->z, Z_SYNC_FLUSH);
		out->len = (size_t)((char *)zl->z.next_out - out->s);
		if (zret != Z_OK && zret != Z_BUF_ERROR)
			return zl_fail(l, "Error compressing data", zret,
				       -EIO);
	} while (zl->z.avail_out == 0 || zl->z.avail_in > 0);
	zl->st.plain += in_len;
	zl->st.wire += out->len - before;
	zl->st.chunks++;
	if (zl->cur == 0)
		zl->st.stored++;
	judge(zl, in_len, out->len - before);
	return 0;
}

/* Keep the input inflate did not take, after what was kept before. */
static int keep_input(struct zl *zl, const unsigned char *src)
{
	size_t left = zl->z.avail_in;

	if (left == 0) {
		zl->pend.len = 0;
		return 0;
	}
	if ((const char *)src == zl->pend.s) {
		memmove(zl->pend.s, zl->z.next_in, left);
		zl->pend.len = left;
		return 0;
	}
	zl->pend.len = 0;
	return prot__buf_append(&zl->pend, zl->z.next_in, left);
}

static int inflate_some(struct prot__layer *l, struct buf *out)
{
	struct zl *zl = l->state;
	size_t start = out->len;
	int ret, zret;

	for (;;) {
		size_t cap = DEC_CAP - (out->len - start);

		ret = out_room(&zl->z, out, cap < 16384 ? cap : 16384);
		if (ret < 0)
			return ret;
		if (zl->z.avail_out > cap)
			zl->z.avail_out = (uInt)cap;
		zret = inflate(&zl->z, Z_SYNC_FLUSH);
		out->len = (size_t)((char *)zl->z.next_out - out->s);
		zl->more_out = zl->z.avail_out == 0;
		if (zret == Z_STREAM_END) {
			/* A final block: RFC 4978 streams never end. */
			zl->ended = true;
			zl->more_out = false;
			break;
		}
		if (zret != Z_OK && zret != Z_BUF_ERROR)
			return zl_fail(l, "Error decompressing data", zret,
				       -EBADMSG);
		if (zret == Z_BUF_ERROR || out->len - start >= DEC_CAP ||
		    (zl->z.avail_in == 0 && !zl->more_out))
			break;
	}
	zl->st.plain += out->len - start;
	return 0;
}

static int inflate_decode(struct prot__layer *l, const unsigned char *in,
			  size_t in_len, struct buf *out)
{
	struct zl *zl = l->state;
	const unsigned char *src = in;
	size_t n = in_len;
	int ret;

	zl->z.msg = NULL;
	ret = zl_resume(l);
	if (ret < 0)
		return ret;
	zl->st.wire += in_len;
	if (zl->pend.len > 0 || in_len == 0) {
		ret = prot__buf_append(&zl->pend, in, in_len);
		if (ret < 0)
			return ret;
		src = (const unsigned char *)zl->pend.s;
		n = zl->pend.len;
	}
	if (zl->ended) {
		if (n == 0)
			return 0;
		snprintf(zl->err, sizeof(zl->err),
			 "Error decompressing data: data after the final "
			 "block");
		l->errtext = zl->err;
		return -EBADMSG;
	}
	if (n == 0 && !zl->more_out)
		return 0;
	zl->z.next_in = (Bytef *)(uintptr_t)src;
	zl->z.avail_in = (uInt)n;
	ret = inflate_some(l, out);
	if (ret < 0)
		return ret;
	return keep_input(zl, src);
}

/* Readiness without input: leftover input, or output inflate holds. */
static bool inflate_pending(const struct prot__layer *l)
{
	const struct zl *zl = l->state;

	return zl->pend.len > 0 || zl->more_out;
}

/*
 * At a block boundary with nothing pending: deflate has flushed every
 * bit (a sync flush ends each chunk); inflate stopped at the start of a
 * block header on a byte boundary (data_type: 128 = at a block start,
 * low bits = unused bits, fewer than 8 there), or never ran.
 */
static bool zl_at_boundary(struct zl *zl)
{
	unsigned pending = 0;
	int bits = 0;

	if (zl->write)
		return deflatePending(&zl->z, &pending, &bits) == Z_OK &&
		       pending == 0 && bits == 0;
	if (zl->pend.len > 0 || zl->more_out || zl->ended)
		return false;
	return zl->z.total_in == 0 ||
	       ((zl->z.data_type & 128) != 0 && (zl->z.data_type & 7) == 0);
}

static void zl_release(struct prot__layer *l)
{
	struct zl *zl = l->state;
	uInt len = 0;
	int zret;

	if (zl->parked || !zl_at_boundary(zl))
		return;
	zret = zl->write ? deflateGetDictionary(&zl->z, NULL, &len)
			 : inflateGetDictionary(&zl->z, NULL, &len);
	if (zret != Z_OK)
		return;
	if (len > 0) {
		zl->dict = malloc(len);
		if (zl->dict == NULL)
			return; /* keeps its state: only memory */
		zret = zl->write ? deflateGetDictionary(&zl->z, zl->dict, &len)
				 : inflateGetDictionary(&zl->z, zl->dict, &len);
		if (zret != Z_OK) {
			free(zl->dict);
			zl->dict = NULL;
			return;
		}
	}
	zl->dict_len = len;
	zl_end(zl);
	zl->parked = true;
	prot__buf_release(&zl->pend);
}

static size_t zl_memory(const struct prot__layer *l)
{
	const struct zl *zl = l->state;

	return sizeof(*l) + sizeof(*zl) + zl->mem + zl->dict_len +
	       zl->pend.alloc;
}

static void zl_destroy(struct prot__layer *l)
{
	struct zl *zl = l->state;

	if (!zl->parked)
		zl_end(zl);
	free(zl->dict);
	prot__buf_release(&zl->pend);
	free(zl);
	free(l);
}

static const struct prot__layer_ops deflate_ops = {
	.name = "deflate",
	.rank = 2,
	.decode = inflate_decode,
	.pending = inflate_pending,
	.encode = deflate_encode,
	.destroy = zl_destroy,
	.release = zl_release,
	.memory = zl_memory,
};

static bool level_ok(int level)
{
	return level >= -1 && level <= 9;
}

static int zl_new(bool write, int level, struct prot__layer **l_out)
{
	struct prot__layer *l = calloc(1, sizeof(*l));
	struct zl *zl = calloc(1, sizeof(*zl));
	int zret;

	if (l == NULL || zl == NULL)
		goto out_free;
	zl->write = write;
	zl->level = level < 0 ? PL_ZLIB_LEVEL_DEFAULT : level;
	zl->cur = zl->level;
	zl->backoff = SKIP_MIN;
	zret = zl_init(zl);
	if (zret != Z_OK)
		goto out_free;
	l->ops = &deflate_ops;
	l->state = zl;
	l->window = write ? 0 : ZLIB_WINDOW;
	*l_out = l;
	return 0;
out_free:
	free(zl);
	free(l);
	return -ENOMEM;
}

int pl_zlib_start(struct protstream *s, int level)
{
	struct prot__layer *l;
	int ret;

	if (!level_ok(level))
		return -EINVAL;
	if (prot__layer_find(s, "deflate") != NULL)
		return -EALREADY;
	ret = zl_new(s->write, level, &l);
	if (ret < 0)
		return ret;
	ret = prot__layer_push(s, l, false, NULL);
	if (ret < 0 && prot__layer_find(s, "deflate") != l) {
		zl_destroy(l);
		return ret;
	}
	/* Cyrus code tests zstrm for "compression is on". */
	s->zstrm = &((struct zl *)l->state)->z;
	return ret;
}

int pl_zlib_activate(struct protstream *in, struct protstream *out,
		     int level)
{
	int ret;

	if (in->write || !out->write || !level_ok(level))
		return -EINVAL;
	if (prot__layer_find(in, "deflate") != NULL ||
	    prot__layer_find(out, "deflate") != NULL)
		return -EALREADY;
	if (in->error != NULL || out->error != NULL)
		return -EIO;
	/* The tagged OK leaves uncompressed, and all of it (RFC 4978 §3). */
	if (prot_flush(out) == EOF)
		return prot__err(out);
	ret = pl_zlib_start(out, level);
	if (ret < 0)
		return ret;
	ret = pl_zlib_start(in, level);
	if (ret < 0 && prot__layer_find(in, "deflate") == NULL)
		prot_unsetcompress(out);
	return ret;
}

int pl_zlib_set_level(struct protstream *out, int level)
{
	struct prot__layer *l;

	if (!out->write || !level_ok(level))
		return -EINVAL;
	l = prot__layer_find(out, "deflate");
	if (l == NULL)
		return -EINVAL;
	((struct zl *)l->state)->level =
		level < 0 ? PL_ZLIB_LEVEL_DEFAULT : level;
	return 0;
}

int pl_zlib_stats(const struct protstream *s, struct pl_zlib_stats *st)
{
	const struct prot__layer *l = prot__layer_find(s, "deflate");

	if (l == NULL)
		return -EINVAL;
	*st = ((const struct zl *)l->state)->st;
	return 0;
}
