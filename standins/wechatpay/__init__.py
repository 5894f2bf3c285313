"""A local stand-in of WeChat Pay API v3: ``server`` (the stand-in), ``keys`` (test keys,
signatures, encryption), ``model`` (what it holds), ``bill`` (the trade bill)."""

from standins.wechatpay.bill import BillFaults, render_trade_bill
from standins.wechatpay.keys import MerchantKeys, aes_gcm_encrypt, write_keys
from standins.wechatpay.model import BAD_KINDS, Delivery, Merchant, Order, PayError, Refund
from standins.wechatpay.server import WeChatPayStandIn

__all__ = [
    "BAD_KINDS",
    "BillFaults",
    "Delivery",
    "Merchant",
    "MerchantKeys",
    "Order",
    "PayError",
    "Refund",
    "WeChatPayStandIn",
    "aes_gcm_encrypt",
    "render_trade_bill",
    "write_keys",
]
