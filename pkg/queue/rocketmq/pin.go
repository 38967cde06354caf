package rocketmq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// ConsumeFrom "last" on a real broker. Asked for the offset of a group that
// has none, a broker answers 0 (SUCCESS, not QUERY_NOT_FOUND) while the
// queue's first message is still "in memory" (ConsumerManageProcessor.
// queryConsumerOffset; on JDK 17 its page-cache check is unavailable and
// always says yes), unless the request says setZeroIfNotFound=false, which
// rocketmq-client-go v2.1.2 never does. Its CONSUME_FROM_LAST_OFFSET then
// starts at 0: a new group would replay the whole topic.
//
// So before the client starts, pinStart asks for each queue's committed
// offset the way the client cannot (setZeroIfNotFound=false) and, for every
// queue the group has none on, commits the queue's current end (its max
// offset) as the group's offset. The client's own query then finds it: the
// group starts exactly after what the queue held when Consume was called,
// with no clock involved. Queues the group already has an offset on are
// never touched, so a restarted or second job instance resumes.

// pinStart fixes the starting offsets of the group's queues that have no
// committed offset. It returns the queues it pinned.
func (c *Consumer) pinStart(ctx context.Context) (int, error) {
	route, err := c.fetchRoute(ctx)
	if err != nil {
		return 0, err
	}
	addrs := map[string]string{} // broker name -> master address
	for _, b := range route.BrokerDatas {
		if a := b.BrokerAddrs["0"]; a != "" {
			addrs[b.BrokerName] = a
		}
	}
	pinned := 0
	for _, qd := range route.QueueDatas {
		if qd.Perm&permRead == 0 || qd.ReadQueueNums <= 0 {
			continue
		}
		addr := addrs[qd.BrokerName]
		if addr == "" {
			return pinned, fmt.Errorf("%w: topic %s: broker %s has no master in the route", ErrClient, c.cfg.Topic, qd.BrokerName)
		}
		n, err := c.pinBroker(ctx, addr, qd.BrokerName, qd.ReadQueueNums)
		pinned += n
		if err != nil {
			return pinned, fmt.Errorf("%w: consume_from last: broker %s (%s): %w", ErrClient, qd.BrokerName, addr, err)
		}
	}
	return pinned, nil
}

const permRead = 1 << 2 // PermName.PERM_READ

// pinTimeout bounds pinStart (each request is bounded by
// remotingRequestTimeout): a broker that does not answer fails Consume with
// ErrClient, which the caller retries.
const pinTimeout = 30 * time.Second

func (c *Consumer) pinBroker(ctx context.Context, addr, broker string, queues int) (int, error) {
	conn, err := dialRemoting(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	pinned := 0
	for q := range queues {
		qs := strconv.Itoa(q)
		resp, err := conn.call(ctx, codeQueryOffset, map[string]string{"consumerGroup": c.cfg.Group, "topic": c.cfg.Topic,
			"queueId": qs, "setZeroIfNotFound": "false"}, nil)
		if err != nil {
			return pinned, err
		}
		switch resp.Code {
		case resSuccess:
			continue // the group has an offset here: resume from it
		case resQueryNotFound:
		default:
			return pinned, fmt.Errorf("query offset of queue %d: code %d: %s", q, resp.Code, resp.Remark)
		}
		resp, err = conn.call(ctx, codeGetMaxOffset, map[string]string{"topic": c.cfg.Topic, "queueId": qs}, nil)
		if err != nil {
			return pinned, err
		}
		if resp.Code != resSuccess {
			return pinned, fmt.Errorf("max offset of queue %d: code %d: %s", q, resp.Code, resp.Remark)
		}
		end, err := strconv.ParseInt(resp.ExtFields["offset"], 10, 64)
		if err != nil || end < 0 {
			return pinned, fmt.Errorf("max offset of queue %d: %q", q, resp.ExtFields["offset"])
		}
		update := map[string]string{"consumerGroup": c.cfg.Group, "topic": c.cfg.Topic, "queueId": qs,
			"commitOffset": strconv.FormatInt(end, 10)}
		resp, err = conn.call(ctx, codeUpdateOffset, update, nil)
		if err == nil && resp.Code == resGroupNotExist {
			// The group is new to this broker: a broker that auto-creates
			// groups would do it at the client's first heartbeat; create it
			// now (the same default config) so its offsets can be stored.
			body, _ := json.Marshal(map[string]string{"groupName": c.cfg.Group})
			if resp, err = conn.call(ctx, codeCreateGroup, nil, body); err == nil && resp.Code != resSuccess {
				return pinned, fmt.Errorf("create consumer group %s: code %d: %s", c.cfg.Group, resp.Code, resp.Remark)
			}
			if err == nil {
				resp, err = conn.call(ctx, codeUpdateOffset, update, nil)
			}
		}
		if err != nil {
			return pinned, err
		}
		if resp.Code != resSuccess {
			return pinned, fmt.Errorf("commit start offset %d of queue %d: code %d: %s", end, q, resp.Code, resp.Remark)
		}
		pinned++
		c.log.Info("consume_from last: new group starts at the end of the queue", "broker", broker, "queue", q, "offset", end)
	}
	return pinned, nil
}

// topicRoute is the part of a name server's TopicRouteData used here.
type topicRoute struct {
	QueueDatas []struct {
		BrokerName    string `json:"brokerName"`
		ReadQueueNums int    `json:"readQueueNums"`
		Perm          int    `json:"perm"`
	} `json:"queueDatas"`
	BrokerDatas []struct {
		BrokerName  string            `json:"brokerName"`
		BrokerAddrs map[string]string `json:"brokerAddrs"`
	} `json:"brokerDatas"`
}

// bareKey matches the unquoted numeric map keys ({0:"host:port"}) of a
// name server older than 4.9.4, which ignores acceptStandardJsonOnly.
var bareKey = regexp.MustCompile(`([{,])(\d+):`)

// fetchRoute asks the name servers, in order, for the topic's route.
func (c *Consumer) fetchRoute(ctx context.Context) (*topicRoute, error) {
	var errs []error
	for _, ns := range c.cfg.NameServers {
		route, err := func() (*topicRoute, error) {
			conn, err := dialRemoting(ctx, ns)
			if err != nil {
				return nil, err
			}
			defer conn.Close()
			resp, err := conn.call(ctx, codeGetRouteInfo, map[string]string{"topic": c.cfg.Topic, "acceptStandardJsonOnly": "true"}, nil)
			if err != nil {
				return nil, err
			}
			switch resp.Code {
			case resSuccess:
			case resTopicNotExist:
				return nil, c.cfg.noTopic(fmt.Errorf("route info not found: %s", resp.Remark))
			default:
				return nil, fmt.Errorf("route of %s from %s: code %d: %s", c.cfg.Topic, ns, resp.Code, resp.Remark)
			}
			route := &topicRoute{}
			if json.Unmarshal(resp.Body, route) != nil {
				if err := json.Unmarshal(bareKey.ReplaceAll(resp.Body, []byte(`$1"$2":`)), route); err != nil {
					return nil, fmt.Errorf("route of %s from %s: %w", c.cfg.Topic, ns, err)
				}
			}
			return route, nil
		}()
		if err == nil || errors.Is(err, ErrNoTopic) {
			return route, err
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("%w: consume_from last: no name server answered: %w", ErrClient, errors.Join(errs...))
}
