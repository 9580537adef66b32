/* map.c - string-keyed hash map with separate chaining (FNV-1a). */
#include "map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

uint64_t map_fnv1a(const char *s, uint64_t h)
{
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static uint64_t hash(const char *s)
{
	return map_fnv1a(s, MAP_FNV_SEED);
}

void map_init(struct map *m)
{
	m->buckets = NULL;
	m->n_buckets = 0;
	m->size = 0;
}

void map_close(struct map *m)
{
	for (size_t i = 0; i < m->n_buckets; i++) {
		struct map_entry *e = m->buckets[i];
		while (e != NULL) {
			struct map_entry *next = e->next;
			free(e->key);
			free(e);
			e = next;
		}
	}
	free(m->buckets);
	map_init(m);
}

static int grow(struct map *m)
{
	size_t n = m->n_buckets ? m->n_buckets * 2 : 64;
	struct map_entry **b = calloc(n, sizeof *b);

	if (b == NULL)
		return -1;
	for (size_t i = 0; i < m->n_buckets; i++) {
		struct map_entry *e = m->buckets[i];
		while (e != NULL) {
			struct map_entry *next = e->next;
			size_t j = hash(e->key) & (n - 1);
			e->next = b[j];
			b[j] = e;
			e = next;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->n_buckets = n;
	return 0;
}

static struct map_entry **slot(const struct map *m, const char *key)
{
	struct map_entry **p;

	if (m->n_buckets == 0)
		return NULL;
	p = &m->buckets[hash(key) & (m->n_buckets - 1)];
	while (*p != NULL && strcmp((*p)->key, key) != 0)
		p = &(*p)->next;
	return p;
}

void *map_get(const struct map *m, const char *key)
{
	struct map_entry **p = slot(m, key);

	return (p != NULL && *p != NULL) ? (*p)->value : NULL;
}

int map_put(struct map *m, const char *key, void *value)
{
	struct map_entry **p = slot(m, key);
	struct map_entry *e;

	if (p != NULL && *p != NULL) {
		(*p)->value = value;
		return 0;
	}
	if (m->size + 1 > m->n_buckets * 3 / 4 && grow(m) != 0)
		return -1;
	p = slot(m, key);
	e = malloc(sizeof *e);
	if (e == NULL)
		return -1;
	e->key = strdup(key);
	if (e->key == NULL) {
		free(e);
		return -1;
	}
	e->value = value;
	e->next = NULL;
	*p = e;
	m->size++;
	return 0;
}

void *map_del(struct map *m, const char *key)
{
	struct map_entry **p = slot(m, key);
	struct map_entry *e;
	void *v;

	if (p == NULL || *p == NULL)
		return NULL;
	e = *p;
	*p = e->next;
	v = e->value;
	free(e->key);
	free(e);
	m->size--;
	return v;
}
