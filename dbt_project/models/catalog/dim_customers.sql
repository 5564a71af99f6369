with

customers as (

    select * from {{ source('catalog', 'customers') }}

),

currencies as (

    select * from {{ source('catalog', 'currencies') }}

)

select
    customers.customer_id,
    customers.name as customer_name,
    customers.currency,
    currencies.minor_unit_exponent,
    customers.stripe_customer_id
from customers
inner join currencies on customers.currency = currencies.currency
