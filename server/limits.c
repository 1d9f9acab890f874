/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * server/limits: open connections per client address, across workers.
 *
 * A chained hash of addresses (IPv4 as IPv4-mapped IPv6, so a client is
 * one entry whichever socket it came in on) under one mutex: taken once
 * at accept and once at close, far from the hot path. Entries go when
 * their count drops to zero, so the table holds only open clients.
 */
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define BUCKETS 4096

struct ip_entry {
	struct ip_entry *next;
	unsigned char addr[16];
	unsigned count;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct ip_entry *table[BUCKETS];

/* The 16-byte key of peer; false for peers without an IP (Unix). */
static bool key_of(const struct sockaddr_storage *peer, unsigned char k[16])
{
	if (peer->ss_family == AF_INET) {
		memset(k, 0, 10);
		k[10] = k[11] = 0xff;
		memcpy(k + 12, &((const struct sockaddr_in *)peer)->sin_addr, 4);
		return true;
	}
	if (peer->ss_family == AF_INET6) {
		memcpy(k, &((const struct sockaddr_in6 *)peer)->sin6_addr, 16);
		return true;
	}
	return false;
}

static unsigned hash(const unsigned char k[16])
{
	uint32_t h = 2166136261u;

	for (int i = 0; i < 16; i++)
		h = (h ^ k[i]) * 16777619u;
	return h % BUCKETS;
}

bool srv__ip_take(const struct sockaddr_storage *peer, unsigned max)
{
	unsigned char k[16];
	struct ip_entry *e;
	unsigned h;
	bool ok = true;

	if (max == 0 || !key_of(peer, k))
		return true;
	h = hash(k);
	pthread_mutex_lock(&lock);
	for (e = table[h]; e != NULL; e = e->next)
		if (memcmp(e->addr, k, 16) == 0)
			break;
	if (e == NULL) {
		e = calloc(1, sizeof(*e));
		if (e == NULL) {
			ok = false; /* cannot count it: refuse, never crash */
		} else {
			memcpy(e->addr, k, 16);
			e->next = table[h];
			table[h] = e;
		}
	}
	if (ok && e->count >= max)
		ok = false;
	else if (ok)
		e->count++;
	pthread_mutex_unlock(&lock);
	return ok;
}

void srv__ip_put(const struct sockaddr_storage *peer)
{
	unsigned char k[16];
	struct ip_entry **ep, *e;

	if (!key_of(peer, k))
		return;
	pthread_mutex_lock(&lock);
	for (ep = &table[hash(k)]; (e = *ep) != NULL; ep = &e->next) {
		if (memcmp(e->addr, k, 16) != 0)
			continue;
		if (--e->count == 0) {
			*ep = e->next;
			free(e);
		}
		break;
	}
	pthread_mutex_unlock(&lock);
}
