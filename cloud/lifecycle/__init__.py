"""The account lifecycle of the business office (DESIGN §12): 开户, 装表, 换表, 拆表, 消户, 过户."""
