/* watchgen.c - many GET /v1/watch clients at once (bench/watch.sh): opens
 * one connection per path in --paths (a file, one request path per line)
 * spread over --targets, reads each Server-Sent Events stream, and prints
 * as JSON how many events came and their delivery latency: the time an
 * event is received here (CLOCK_REALTIME) minus its "at_ms" (when the node
 * serving it applied its entry; same machine, same clock). One thread,
 * epoll. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_TARGETS 16
#define HIST_MS 60000 /* latencies in 1 ms buckets up to a minute */

enum hstate { H_HEAD, H_SIZE, H_DATA, H_DATA_END, H_DONE };

struct conn {
	int fd;
	int target;
	char *req;
	size_t req_len, req_off;
	enum hstate st;
	char head[4096];
	size_t head_len;
	uint64_t chunk_left;
	char size_line[32];
	size_t size_len;
	char line[8192];            /* the SSE line being read */
	size_t line_len;
	bool ok;                    /* answered 200 */
	bool failed;
};

static struct sockaddr_in targets[MAX_TARGETS];
static char hosts[MAX_TARGETS][64];
static int n_targets;
static uint64_t hist[HIST_MS + 1];
static uint64_t events, resets, measured, errors, connected, closed;
static bool measuring;
static int64_t max_lat;

static int64_t now_ms(clockid_t clk)
{
	struct timespec t;

	clock_gettime(clk, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void die(const char *msg)
{
	fprintf(stderr, "watchgen: %s\n", msg);
	exit(2);
}

static void sse_line(struct conn *c)
{
	c->line[c->line_len] = '\0';
	if (strncmp(c->line, "event: reset", 12) == 0)
		resets++;
	if (strncmp(c->line, "data: ", 6) == 0) {
		const char *p = strstr(c->line, "\"at_ms\":");
		events++;
		if (p != NULL && measuring) {
			int64_t at = strtoll(p + 8, NULL, 10);
			int64_t lat = now_ms(CLOCK_REALTIME) - at;
			if (lat < 0)
				lat = 0;
			if (lat > HIST_MS)
				lat = HIST_MS;
			hist[lat]++;
			if (lat > max_lat)
				max_lat = lat;
			measured++;
		}
	}
	c->line_len = 0;
}

static void body_bytes(struct conn *c, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n') {
			sse_line(c);
		} else if (c->line_len < sizeof c->line - 1) {
			c->line[c->line_len++] = p[i];
		}
	}
}

/* Feed received bytes through the HTTP/1.1 chunked decoder. */
static void feed(struct conn *c, const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && !c->failed) {
		switch (c->st) {
		case H_HEAD:
			if (c->head_len < sizeof c->head - 1)
				c->head[c->head_len++] = p[i];
			i++;
			c->head[c->head_len] = '\0';
			if (c->head_len >= 4 &&
			    strcmp(c->head + c->head_len - 4, "\r\n\r\n") == 0) {
				if (strncmp(c->head, "HTTP/1.1 200", 12) != 0) {
					c->failed = true;
					errors++;
					break;
				}
				c->ok = true;
				connected++;
				c->st = H_SIZE;
			}
			break;
		case H_SIZE:
			if (p[i] == '\n') {
				c->size_line[c->size_len] = '\0';
				c->chunk_left = strtoull(c->size_line, NULL, 16);
				c->size_len = 0;
				c->st = c->chunk_left ? H_DATA : H_DONE;
			} else if (p[i] != '\r' &&
				   c->size_len < sizeof c->size_line - 1) {
				c->size_line[c->size_len++] = p[i];
			}
			i++;
			break;
		case H_DATA: {
			size_t take = n - i;
			if (take > c->chunk_left)
				take = (size_t)c->chunk_left;
			body_bytes(c, p + i, take);
			i += take;
			c->chunk_left -= take;
			if (c->chunk_left == 0)
				c->st = H_DATA_END;
			break;
		}
		case H_DATA_END:
			if (p[i] == '\n')
				c->st = H_SIZE;
			i++;
			break;
		case H_DONE:
			i = n;
			break;
		}
	}
}

static void parse_targets(char *list)
{
	for (char *tok = strtok(list, ","); tok != NULL; tok = strtok(NULL, ",")) {
		char *colon = strrchr(tok, ':');
		if (colon == NULL || n_targets == MAX_TARGETS)
			die("--targets host:port,...");
		*colon = '\0';
		targets[n_targets].sin_family = AF_INET;
		targets[n_targets].sin_port = htons((uint16_t)atoi(colon + 1));
		if (inet_pton(AF_INET, tok, &targets[n_targets].sin_addr) != 1)
			die("bad target address");
		snprintf(hosts[n_targets], sizeof hosts[n_targets], "%s:%s",
			 tok, colon + 1);
		n_targets++;
	}
}

static double pct(double q)
{
	uint64_t want = (uint64_t)(q * (double)measured), seen = 0;

	if (measured == 0)
		return -1;
	for (int i = 0; i <= HIST_MS; i++) {
		seen += hist[i];
		if (seen > want)
			return i;
	}
	return HIST_MS;
}

int main(int argc, char **argv)
{
	const char *paths_file = NULL, *token = NULL, *ready_file = NULL;
	double duration = 10, connect_timeout = 60;
	char *tlist = NULL;
	static const struct option opts[] = {
		{"targets", 1, 0, 't'}, {"paths", 1, 0, 'p'},
		{"token", 1, 0, 'k'},	{"duration", 1, 0, 'd'},
		{"ready-file", 1, 0, 'r'}, {"connect-timeout", 1, 0, 'c'},
		{0, 0, 0, 0}};
	int o;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 't': tlist = optarg; break;
		case 'p': paths_file = optarg; break;
		case 'k': token = optarg; break;
		case 'd': duration = atof(optarg); break;
		case 'r': ready_file = optarg; break;
		case 'c': connect_timeout = atof(optarg); break;
		default: die("usage: watchgen --targets A,B --paths FILE "
			     "[--token T] [--duration S] [--ready-file F]");
		}
	}
	if (tlist == NULL || paths_file == NULL)
		die("--targets and --paths are required");
	parse_targets(tlist);
	signal(SIGPIPE, SIG_IGN);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	FILE *pf = fopen(paths_file, "r");
	if (pf == NULL)
		die("cannot open --paths");
	struct conn *conns = NULL;
	size_t n = 0, cap = 0;
	char line[1024];
	int ep = epoll_create1(0);
	while (fgets(line, sizeof line, pf) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] == '\0')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 256;
			conns = realloc(conns, cap * sizeof *conns);
			if (conns == NULL)
				die("out of memory");
		}
		struct conn *c = &conns[n];
		memset(c, 0, sizeof *c);
		c->target = (int)(n % (size_t)n_targets);
		char req[2048];
		int len = snprintf(req, sizeof req,
				   "GET %s HTTP/1.1\r\nHost: %s\r\n"
				   "Accept: text/event-stream\r\n%s%s%s\r\n",
				   line, hosts[c->target],
				   token ? "Authorization: Bearer " : "",
				   token ? token : "", token ? "\r\n" : "");
		c->req = strdup(req);
		c->req_len = (size_t)len;
		n++;
	}
	fclose(pf);
	/* connect all (non-blocking), then send each request */
	for (size_t i = 0; i < n; i++) {
		struct conn *c = &conns[i];
		c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		if (c->fd < 0)
			die("socket: out of file descriptors?");
		int one = 1;
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		if (connect(c->fd, (struct sockaddr *)&targets[c->target],
			    sizeof targets[c->target]) != 0 &&
		    errno != EINPROGRESS) {
			c->failed = true;
			errors++;
			continue;
		}
		struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT,
					 .data.ptr = c};
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
	}
	int64_t t0 = now_ms(CLOCK_MONOTONIC), t_end = 0;
	bool ready = false;
	struct epoll_event evs[256];
	char buf[65536];
	for (;;) {
		int64_t now = now_ms(CLOCK_MONOTONIC);
		if (!ready && (connected + errors >= n ||
			       now - t0 > (int64_t)(connect_timeout * 1000))) {
			ready = true;
			measuring = true;
			t_end = now + (int64_t)(duration * 1000);
			if (ready_file != NULL) {
				FILE *rf = fopen(ready_file, "w");
				if (rf != NULL) {
					fprintf(rf, "%" PRIu64 "\n", connected);
					fclose(rf);
				}
			}
		}
		if (ready && now >= t_end)
			break;
		int k = epoll_wait(ep, evs, 256, 50);
		for (int j = 0; j < k; j++) {
			struct conn *c = evs[j].data.ptr;
			if (c->failed)
				continue;
			if ((evs[j].events & EPOLLOUT) && c->req_off < c->req_len) {
				ssize_t w = send(c->fd, c->req + c->req_off,
						 c->req_len - c->req_off, 0);
				if (w > 0)
					c->req_off += (size_t)w;
				if (c->req_off == c->req_len) {
					struct epoll_event ev = {
						.events = EPOLLIN, .data.ptr = c};
					epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
				}
			}
			if (evs[j].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
				ssize_t r = recv(c->fd, buf, sizeof buf, 0);
				if (r > 0) {
					feed(c, buf, (size_t)r);
				} else if (r == 0 ||
					   (errno != EAGAIN && errno != EINTR)) {
					epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
					c->failed = true;
					closed++;
				}
			}
		}
	}
	printf("{\"conns\":%zu,\"connected\":%" PRIu64 ",\"errors\":%" PRIu64
	       ",\"closed\":%" PRIu64 ",\"events\":%" PRIu64
	       ",\"measured\":%" PRIu64 ",\"resets\":%" PRIu64
	       ",\"p50_ms\":%.0f,\"p99_ms\":%.0f,\"max_ms\":%" PRId64 "}\n",
	       n, connected, errors, closed, events, measured, resets,
	       pct(0.50), pct(0.99), max_lat);
	for (size_t i = 0; i < n; i++) {
		close(conns[i].fd);
		free(conns[i].req);
	}
	free(conns);
	return 0;
}
