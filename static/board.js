// Keeps each order on the board once: an out-of-band insert of an order already shown is dropped.
//
// New orders reach the board out of band (hx-swap-oob="afterend:#board-head") from two answers
// that do not know of each other: the new-orders poller's, whose `shown` list was sent before
// the order reached the page, and the new-order form's. When a poll is under way while the form
// starts an order, both answers carry it. (A poller that a filter change has taken off the page
// still has its answer swapped, but that answer targets the head of the view it asked for.)
// The server cannot know what the page shows by then, so the page decides, at the one place
// where orders come in. The group already shown wins: it keeps itself current by polling, and
// replacing it could wipe a form the operator has open in it.
document.addEventListener("htmx:oobBeforeSwap", (event) => {
  const shown = new Set(
    Array.from(document.querySelectorAll("tbody.order"), (group) => group.dataset.orderId),
  );
  for (const group of event.detail.fragment.querySelectorAll("tbody.order")) {
    if (shown.has(group.dataset.orderId)) group.remove();
  }
});
