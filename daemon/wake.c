/* wake.c - another thread wakes the loop through an eventfd (wake.h says
 * why not uv_async_t). */
#include "daemon/wake.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void readable_cb(uv_poll_t *h, int status, int events)
{
	struct wake *w = (struct wake *)h;
	uint64_t n;

	/* reset the counter first: a send after this read wakes us again */
	while (read(w->fd, &n, sizeof n) < 0 && errno == EINTR)
		;
	w->cb(w);
}

int wake_init(uv_loop_t *loop, struct wake *w, wake_fn cb)
{
	int rc;

	w->cb = cb;
	w->close_cb = NULL;
	w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->fd < 0)
		return -errno;
	rc = uv_poll_init(loop, &w->poll, w->fd);
	if (rc == 0)
		rc = uv_poll_start(&w->poll, UV_READABLE, readable_cb);
	if (rc != 0) {
		close(w->fd);
		w->fd = -1;
	}
	return rc;
}

void wake_send(struct wake *w)
{
	uint64_t one = 1;

	/* EAGAIN: the counter is at its maximum, so a wakeup is pending */
	while (write(w->fd, &one, sizeof one) < 0 && errno == EINTR)
		;
}

static void closed_cb(uv_handle_t *h)
{
	struct wake *w = (struct wake *)h;

	close(w->fd);
	w->fd = -1;
	if (w->close_cb != NULL)
		w->close_cb(h);
}

void wake_close(struct wake *w, uv_close_cb cb)
{
	w->close_cb = cb;
	if (!uv_is_closing((uv_handle_t *)&w->poll))
		uv_close((uv_handle_t *)&w->poll, closed_cb);
}
