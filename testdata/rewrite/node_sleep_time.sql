
      SELECT next_iteration, CEIL(EXTRACT('epoch' FROM (next_iteration::TIMESTAMP - NOW()::TIMESTAMP)) * 1000) AS delay
      FROM fetchq.jobs WHERE next_iteration > NOW() ORDER BY next_iteration ASC LIMIT 1;
